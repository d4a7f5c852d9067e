"""Metrics: Vector + doses + held-out prompts -> the per-prompt numbers behind C2 and C3 (DESIGN.md s.5).

- `branch_pmass`: fork the steered greedy rollout at t in {0, 5, ..., 50}, append the
  answer suffix, one teacher-forced forward under the same steering; pmass = total
  probability of the first tokens of every spelling of true/false. Forks reuse the
  rollout's KV cache (cropped back to the fork), so each costs only the suffix tokens.
- `target_logit`: at the first answer position of a sentiment probe,
  L = logsumexp(logits[positive words]) - logsumexp(logits[negative words]).
- base NLL and per-token KL come from `rollout.rollout` (base twins): see `isokl.sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hooks import row_doses, steer
from .models import LM
from .rollout import forward, left_pad, pad_id, rollout
from .vector import Vector

FORKS = tuple(range(0, 51, 5))
# DESIGN.md s.5 tokenization trap: a suffix ending in a space makes the space its own token and every
# model then predicts digits. The space stays with the answer (" true" is one token).
SUFFIX = '\nAnswer (true/false): {"value":'
SPELLINGS = {"true": ("true", " true", "True", " True", "TRUE", " TRUE"), "false": ("false", " false", "False", " False", "FALSE", " FALSE")}


def first_token_ids(tokenizer, words) -> set[int]:
    encoded = (tokenizer(w, add_special_tokens=False)["input_ids"] for w in words)
    return {ids[0] for ids in encoded if ids}


def answer_ids(tokenizer) -> tuple[list[int], list[int]]:
    """First-token ids of every spelling of true and of false; a first token both share (a bare space in a
    byte-level vocabulary) commits to neither answer and is dropped from both."""
    t, f = first_token_ids(tokenizer, SPELLINGS["true"]), first_token_ids(tokenizer, SPELLINGS["false"])
    t, f = t - (t & f), f - (t & f)
    if not t or not f:
        raise ValueError("this tokenizer has no first token that commits to true or to false; branch_pmass is undefined")
    return sorted(t), sorted(f)


@dataclass(frozen=True)
class PMass:
    """[k n f] arrays for doses k, prompts n, fork points f."""

    forks: tuple[int, ...]
    pmass: torch.Tensor  # P(first token of any true/false spelling)
    p_true: torch.Tensor
    censored: torch.Tensor  # bool: the rollout ended (EOS) before the fork point; not scored
    rollout_tokens: torch.Tensor  # [k*n t]


def _crop(cache, keep: int) -> None:
    """Cut the cache back to its first `keep` positions (a negative argument removes tokens in every 5.x API)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


@torch.no_grad()
def branch_pmass(
    lm: LM, seqs: list[list[int]], vector: Vector | None, coeffs: tuple[float, ...], T: int = 50, forks: tuple[int, ...] = FORKS
) -> PMass:
    """Steered greedy rollouts of the questions, then one teacher-forced suffix forward per fork point."""
    if max(forks) > T or min(forks) < 0:
        raise ValueError(f"fork points must lie in [0, T = {T}]")
    t_ids, f_ids = answer_ids(lm.tokenizer)
    suffix = lm.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    ro, (cache, mask, S) = rollout(lm, seqs, T, vector, coeffs, score_base=False, return_cache=True)
    r = ro.tokens.shape[0]
    dose = torch.tensor(row_doses(coeffs, len(seqs)), dtype=torch.float64)
    pm = torch.zeros((r, len(forks)), dtype=torch.float64)
    pt = torch.zeros_like(pm)
    eos = torch.tensor(lm.eos_ids or [-1], device=lm.device)
    ended = torch.isin(ro.tokens, eos)  # [r t]
    censored = torch.zeros((r, len(forks)), dtype=torch.bool)
    order = sorted(range(len(forks)), key=lambda j: -forks[j])  # descending t: each fork only crops the cache
    with steer(lm.model, vector, dose):
        for j in order:
            t = forks[j]
            censored[:, j] = ended[:, :t].any(-1).cpu() if t > 0 else False
            if t > ro.steps:  # every row ended before t: nothing to score
                censored[:, j] = True
                continue
            keep = min(t, ro.steps - 1)  # the rollout fed steps - 1 generated tokens; forks descend, so only crops
            _crop(cache, S + keep)
            feed = torch.cat([ro.tokens[:, keep:t], torch.tensor(suffix, device=lm.device).expand(r, -1)], dim=-1)
            m = torch.cat([mask[:, : S + keep], torch.ones_like(feed)], dim=-1)
            start = mask[:, : S + keep].sum(-1, keepdim=True)  # real tokens before the feed, per row
            pos = start + torch.arange(feed.shape[1], device=lm.device)
            logits = forward(lm.model, feed, m, pos, cache, keep=1)[:, -1]
            p = torch.softmax(logits.double(), -1)
            pt[:, j] = p[:, t_ids].sum(-1).cpu()
            pm[:, j] = pt[:, j] + p[:, f_ids].sum(-1).cpu()
    k, n = len(coeffs), len(seqs)
    return PMass(tuple(forks), pm.view(k, n, -1), pt.view(k, n, -1), censored.view(k, n, -1), ro.tokens.cpu())


def word_ids(tokenizer, words: list[str]) -> set[int]:
    """First tokens of each word as it may follow text: ' word', 'word', ' Word', 'Word'."""
    return first_token_ids(tokenizer, [v for w in words for v in (" " + w, w, " " + w.capitalize(), w.capitalize())])


@torch.no_grad()
def target_logit(lm: LM, seqs: list[list[int]], vector: Vector | None, coeffs: tuple[float, ...], pos_words, neg_words) -> torch.Tensor:
    """L = logsumexp(logits[positive]) - logsumexp(logits[negative]) at the next position: [k n]."""
    if vector is not None:
        vector.check_fits(lm.id, lm.n_layers, lm.d_model)
    pos_ids, neg_ids = word_ids(lm.tokenizer, pos_words), word_ids(lm.tokenizer, neg_words)
    shared = pos_ids & neg_ids  # a word piece common to both lists says nothing about sentiment
    pos_ids, neg_ids = sorted(pos_ids - shared), sorted(neg_ids - shared)
    k, n = len(coeffs), len(seqs)
    ids, mask, pos = left_pad(seqs * k, pad_id(lm), lm.device)
    dose = torch.tensor(row_doses(coeffs, n), dtype=torch.float64)
    with steer(lm.model, vector, dose):
        logits = forward(lm.model, ids, mask, pos, keep=1)[:, -1].double()
    L = torch.logsumexp(logits[:, pos_ids], -1) - torch.logsumexp(logits[:, neg_ids], -1)
    return L.view(k, n).cpu()
