"""Metrics: Vector + coefficients + held-out prompts -> the per-prompt numbers behind C2 and C3 (DESIGN.md s.5).

- `branch_pmass`: fork the steered greedy rollout at t in {0, 5, ..., 50}, append the
  answer suffix, one teacher-forced forward under the same steering; pmass = total
  probability of the first tokens of every spelling of true/false. Forks reuse the
  rollout's KV cache (cropped back to the fork), so each costs only the suffix tokens.
- `target_logit`: at the first answer position of a sentiment probe,
  target_logit = logsumexp(logits[positive words]) - logsumexp(logits[negative words]).
- `concept_axis` + `text_projection`: the judge's concept score, read from the text by the unsteered base model
  (docs/decisions.md, "The judge").
- `question_reading`: the judge's behavioural reading: the unsteered base model reads a request and its reply, then
  the concept's question about it; the log-odds of its two answers (docs/decisions.md, "A ranking that holds up").
- base NLL and per-token KL come from `rollout.rollout` (base twins): see `isokl.study.sweep`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass

import torch

from ..core.forks import fork_rollout
from ..core.formats.vector import Vector
from ..core.model.hooks import Captured, Layout, capture, steer_rows
from ..core.model.models import LM, forward, left_pad, new_cache, pad_id
from ..core.model.prompts import apart, first_tokens, word_variants
from ..core.model.reading import last_token
from ..core.runtimes.rollout import BasePrefill, prefill_base

FORKS = tuple(range(0, 51, 5))
# DESIGN.md s.5 tokenization trap: a suffix ending in a space makes the space its own token and every
# model then predicts digits. The space stays with the answer (" true" is one token).
SUFFIX = '\nAnswer (true/false): {"value":'
SPELLINGS = {
    "true": ("true", " true", "True", " True", "TRUE", " TRUE"),
    "false": ("false", " false", "False", " False", "FALSE", " FALSE"),
}


def answer_ids(tokenizer) -> tuple[list[int], list[int]]:
    """First-token ids of every spelling of true and of false; a first token both share (a bare space in a
    byte-level vocabulary) commits to neither answer and is dropped from both."""
    t, f = apart(first_tokens(tokenizer, SPELLINGS["true"]), first_tokens(tokenizer, SPELLINGS["false"]))
    if not t or not f:
        raise ValueError("this tokenizer has no first token that commits to true or to false; branch_pmass is undefined")
    return sorted(t), sorted(f)


@dataclass(frozen=True)
class PMass:
    """[k n f] arrays for coefficients k, prompts n, fork points f."""

    forks: tuple[int, ...]
    pmass: torch.Tensor  # P(first token of any true/false spelling)
    p_true: torch.Tensor
    censored: torch.Tensor  # bool: the rollout ended (EOS) before the fork point; not scored
    rollout_tokens: torch.Tensor  # [k*n t]


@torch.no_grad()
def branch_pmass(
    lm: LM, seqs: list[list[int]], vector: Vector | None, coeffs: tuple[float, ...], T: int = 50, forks: tuple[int, ...] = FORKS
) -> PMass:
    """Steered greedy rollouts of the questions, then one teacher-forced suffix forward per fork point."""
    if max(forks) > T or min(forks) < 0:
        raise ValueError(f"fork points must lie in [0, T = {T}]")
    t_ids, f_ids = answer_ids(lm.tokenizer)
    suffix = lm.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    branches = fork_rollout(lm, seqs, T, vector, coeffs)
    ro = branches.rollout
    r = ro.tokens.shape[0]
    pmass = torch.zeros((r, len(forks)), dtype=torch.float64)
    p_true = torch.zeros_like(pmass)
    ended = torch.isin(ro.tokens, torch.tensor(lm.eos_ids or [-1], device=lm.device))  # [r t]
    censored = torch.zeros((r, len(forks)), dtype=torch.bool)
    for j in sorted(range(len(forks)), key=lambda j: -forks[j]):  # descending t: each fork only crops the cache
        t = forks[j]
        censored[:, j] = ended[:, :t].any(-1).cpu() if t > 0 else False
        if t > ro.steps:  # every row ended before t: nothing to score
            censored[:, j] = True
            continue
        p = torch.softmax(branches.logits_after(t, suffix).double(), -1)
        p_true[:, j] = p[:, t_ids].sum(-1).cpu()
        pmass[:, j] = p_true[:, j] + p[:, f_ids].sum(-1).cpu()
    layout = ro.layout
    return PMass(tuple(forks), layout.split(pmass), layout.split(p_true), layout.split(censored), ro.tokens.cpu())


def word_ids(tokenizer, words: list[str]) -> set[int]:
    """First tokens of each word as it may follow text: ' word', 'word', ' Word', 'Word'."""
    return first_tokens(tokenizer, [v for w in words for v in word_variants(w)])


@torch.no_grad()
def target_logit(
    lm: LM, seqs: list[list[int]], vector: Vector | None, coeffs: tuple[float, ...], pos_words, neg_words
) -> torch.Tensor:
    """logsumexp(logits[positive]) - logsumexp(logits[negative]) at the next position: [k n]."""
    if vector is None:
        return target_logit_many(lm, seqs, [], [coeffs], pos_words, neg_words)
    return target_logit_many(lm, seqs, [vector], [coeffs], pos_words, neg_words)


@torch.no_grad()
def target_logit_many(
    lm: LM, seqs: list[list[int]], vectors: Sequence[Vector], coeffs: Sequence[Sequence[float]], pos_words, neg_words
) -> torch.Tensor:
    """`target_logit` of several vectors in one forward, vector j at its doses coeffs[j] (no vector: the base model at
    coeffs[0]) -> [flat dose n], doses grouped by vector (`Layout` blocks)."""
    for v in vectors:
        v.check_fits(lm.id, lm.n_layers, lm.d_model)
    pos_ids, neg_ids = word_ids(lm.tokenizer, pos_words), word_ids(lm.tokenizer, neg_words)
    pos_set, neg_set = apart(pos_ids, neg_ids)  # a word piece common to both lists says nothing about the concept
    pos_list, neg_list = sorted(pos_set), sorted(neg_set)
    layout = Layout.for_vectors(coeffs, len(seqs))
    ids, mask, pos = left_pad(layout.repeat(seqs), pad_id(lm), lm.device)
    parts = layout.parts(vectors) if vectors else []
    with steer_rows(lm.model, parts, layout.c_per_row()) if parts else nullcontext():
        logits = forward(lm.model, ids, mask, pos, keep=1)[:, -1].double()
    axis = torch.logsumexp(logits[:, pos_list], -1) - torch.logsumexp(logits[:, neg_list], -1)
    return layout.split(axis).cpu()


# the behavioural reading's text: frozen with its protocol (docs/decisions.md, "A ranking that holds up"); no trailing
# space (the answer's own leading space is part of its first token, as in SUFFIX)
QUESTION = "Request: {request}\nReply: {reply}\n\nQuestion: {question}\nAnswer:"
QUESTION_BATCH = 16


@torch.no_grad()
def question_reading(
    lm: LM, requests: Sequence[str], replies: Sequence[str], question: str, answers: tuple[str, str]
) -> torch.Tensor:
    """Each (request, reply) read by the unsteered model, then `question`, teacher-forced in one forward (no steering,
    no generation) -> [n] float64: logsumexp(logits of the positive answer's first tokens) - the same of the negative
    answer's, at the position after "Answer:" (each answer in its four spellings, `word_variants`; a first token both
    answers share is dropped, `apart`)."""
    if len(requests) != len(replies):
        raise ValueError(f"question_reading: {len(requests)} requests, {len(replies)} replies")
    pos_ids, neg_ids = apart(word_ids(lm.tokenizer, [answers[0]]), word_ids(lm.tokenizer, [answers[1]]))
    if not pos_ids or not neg_ids:
        raise ValueError(f"answers {answers}: no first token tells them apart in {lm.id}'s vocabulary")
    pos, neg = sorted(pos_ids), sorted(neg_ids)
    texts = [QUESTION.format(request=q, reply=r, question=question) for q, r in zip(requests, replies, strict=True)]
    out = []
    for i in range(0, len(texts), QUESTION_BATCH):
        seqs = lm.tokenizer(texts[i : i + QUESTION_BATCH], add_special_tokens=True)["input_ids"]
        ids, mask, at = left_pad(seqs, pad_id(lm), lm.device)
        logits = forward(lm.model, ids, mask, at, keep=1)[:, -1].double()
        out.append((torch.logsumexp(logits[:, pos], -1) - torch.logsumexp(logits[:, neg], -1)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


# ---- the concept score (the judge; docs/decisions.md, "The judge") ------------------------------------------------


def loo_separation(diff: torch.Tensor) -> torch.Tensor:
    """Pairs' differences h+ - h- [l n d] -> [l]: at each block, how consistently a pair the axis never saw separates
    along it. For each pair i, u = unit(mean of the other pairs' differences), s_i = diff_i . u; the score is
    mean_i s_i / sd_i s_i (scale-free; docs/decisions.md, "One ruler for every vector"). NaN where undefined."""
    n = diff.shape[1]
    if n < 3:
        raise ValueError(f"the judge's ruler needs at least 3 contrast pairs to choose its block, got {n}")
    others = (diff.sum(1, keepdim=True) - diff) / (n - 1)  # [l n d]
    u = others / others.norm(dim=-1, keepdim=True)
    s = (diff * u).sum(-1)  # [l n]
    return s.mean(1) / s.std(1)


@dataclass(frozen=True)
class Reference:
    """The judge's one ruler for a (model, concept): the block where held-out pairs separate best, and every block's
    score (`loo_separation`)."""

    block: int
    scores: tuple[float, ...]
    axis: ConceptAxis  # the pairs' axis at that block (from the same forward that chose it)


@torch.no_grad()
def reference_block(lm: LM, pairs) -> Reference:
    """The contrast pairs alone -> the block every continuation is read at (the highest `loo_separation`; ties and
    NaN: the lower block)."""
    every = tuple(range(lm.n_layers))
    acts = last_token(lm, [p.positive for p in pairs] + [p.negative for p in pairs], every).double()  # [l 2n d]
    diff = acts[:, : len(pairs)] - acts[:, len(pairs) :]
    scores = loo_separation(diff)
    best = int(torch.nan_to_num(scores, nan=-torch.inf).argmax())  # argmax: the first of equal maxima
    return Reference(best, tuple(float(x) for x in scores), ConceptAxis.of(diff[best : best + 1], (best,)))


@dataclass(frozen=True)
class ConceptAxis:
    """The concept's direction at some layers: u [l d] the unit mean difference of the contrast pairs' last-token block
    outputs (positive minus negative), scale [l] the pairs' own separation along it."""

    layers: tuple[int, ...]
    u: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, diff: torch.Tensor, layers: tuple[int, ...]) -> ConceptAxis:
        """The pairs' differences h+ - h- [l n d] at `layers` -> their unit mean difference and their mean separation."""
        u = diff.mean(1)
        u = u / u.norm(dim=-1, keepdim=True)
        return cls(tuple(layers), u, (diff * u[:, None]).sum(-1).mean(1))


@torch.no_grad()
def concept_axis(lm: LM, pairs, layers: tuple[int, ...]) -> ConceptAxis:
    """The base model's block outputs at the last token of every pair -> the concept's axis at `layers`."""
    acts = last_token(lm, [p.positive for p in pairs] + [p.negative for p in pairs], layers).double()  # [l 2n d]
    return ConceptAxis.of(acts[:, : len(pairs)] - acts[:, len(pairs) :], tuple(layers))


@torch.no_grad()
def text_projection(
    lm: LM, seqs: list[list[int]], conts: list[list[int]], axis: ConceptAxis, prompts: BasePrefill | None = None
) -> torch.Tensor:
    """Each prompt followed by its continuation, read by the unsteered base model -> [n l]: the mean over the
    continuation's positions of the block outputs projected on the axis, in units of the pairs' separation (NaN for an
    empty continuation). prompts: the base model's prefill of `seqs` (`rollout.prefill_base`), shared by every call on
    the same prompts: only the continuations are fed, on the prompts' KV cache."""
    prompts = prompts if prompts is not None and prompts.seqs == tuple(map(tuple, seqs)) else prefill_base(lm, seqs)
    n, m = len(seqs), max(1, max(len(c) for c in conts))
    cache = new_cache(lm.model)
    for layer, (k, v) in enumerate(zip(prompts.keys, prompts.values, strict=True)):
        cache.update(k.clone(), v.clone(), layer)
    _, before, pos = left_pad(seqs, pad_id(lm), lm.device)
    feed = torch.full((n, m), pad_id(lm), dtype=torch.long, device=lm.device)
    real = torch.zeros((n, m), dtype=torch.long, device=lm.device)
    for i, c in enumerate(conts):
        feed[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        real[i, : len(c)] = 1
    mask = torch.cat([before, real], dim=-1)  # right padding after a continuation: no real token attends to it
    at = pos[:, -1:] + 1 + torch.arange(m, device=lm.device)
    # the blocks above the deepest layer read are not run
    with capture(lm.model, axis.layers, stop=True) as store, suppress(Captured):
        forward(lm.model, feed, mask, at, cache, keep=1)
    ok = real.bool().cpu()
    out = torch.full((n, len(axis.layers)), float("nan"), dtype=torch.float64)
    for j, layer in enumerate(axis.layers):
        proj = (store[layer].double() @ axis.u[j].to(lm.device)).cpu()  # [n m]
        sums = (proj * ok).sum(-1)
        out[:, j] = torch.where(ok.any(-1), sums / ok.sum(-1).clamp(min=1), torch.nan) / axis.scale[j].cpu()
    return out
