"""Measures: a vector at coefficients c = alpha x c* on the held-out sets -> the rows of each CSV file.

One registered function per file (`@measure("pmass", "label")`): it receives a `HeldOut`
(the model, the vector, the coefficients, the held-out prompts and the shared generic
rollout) and returns that file's rows. The sweep runs every registered measure for every
cell, and for the base model (vector None, alpha 0). Adding a metric = its function in
`metrics`, one measure here, its columns in `records.FILES`, and its use in a table or figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..core.formats.concept import Concept
from ..core.formats.vector import Vector
from ..core.model.models import LM
from ..core.model.prompts import Prompt
from ..core.runtimes.rollout import Rollout, rollout, rollout_many
from .metrics import FORKS, branch_pmass, target_logit, target_logit_many
from .records import FILES

EXAMPLES = 3  # the study's examples: the first 3 held-out generic prompts (fixed before any v2 result: docs/decisions.md)


@dataclass
class HeldOut:
    """What every measure of one cell shares."""

    lm: LM
    vector: Vector | None  # None: the base model
    coeffs: tuple[float, ...]  # c of each dose
    alphas: tuple[float, ...]  # its label alpha = c / c*
    n: dict[str, int]  # prompts per held-out pool (its first n)
    horizon: int  # tokens per held-out rollout
    prov: dict = field(default_factory=dict)  # provenance columns of every row
    pmass_alphas: tuple[float, ...] | None = None  # the doses pmass is measured at (its forks cost most); None: all
    concept: Concept = field(default_factory=Concept.builtin_default)  # whose held-out prompts, probes and words
    joint: dict = field(default_factory=dict)  # passes computed in one batch with other vectors (`held_out_many`)
    examples: int | None = EXAMPLES  # decoded continuations kept (`examples`): the study's first 3, None: all (the judge)

    def prompts(self, pool: str) -> list[Prompt]:
        """The first n prompts of a held-out set (`concept.SETS`)."""
        return self.concept.heldout_set(pool, self.n[pool])

    def seqs(self, pool: str) -> list[list[int]]:
        return self.lm.encode([self.lm.format(p) for p in self.prompts(pool)])

    def ids(self, pool: str) -> list[str]:
        return [p.id for p in self.prompts(pool)]

    def row(self, k: int, **cols) -> dict:
        """A row of dose k: provenance, alpha, c, then the measure's own columns."""
        return {**self.prov, "alpha": self.alphas[k], "c": self.coeffs[k], **cols}

    def doses(self, alphas: tuple[float, ...] | None) -> list[int]:
        """Indices k of the doses among `alphas` (None: every dose)."""
        return [k for k, a in enumerate(self.alphas) if alphas is None or a in alphas]

    @cached_property
    def generic(self) -> Rollout:
        """The held-out generic prompts' greedy rollouts (with base twins): trajectories, NLL, held-out p95."""
        if "generic" in self.joint:
            return self.joint["generic"]
        return rollout(self.lm, self.seqs("heldout_generic"), self.horizon, self.vector, self.coeffs)

    def probe_words(self) -> dict[str, list[str]] | None:
        """The concept's answer words where its probes are measured; None: no probes (the target axis not measured)."""
        words = self.concept.words()
        return words if words is not None and self.n["heldout_sentiment"] else None

    @cached_property
    def axis(self) -> torch.Tensor | None:
        """[k n] the target-axis logit of each probe at each dose; None: the concept has no probes."""
        words = self.probe_words()
        if words is None:
            return None
        if "axis" in self.joint:
            return self.joint["axis"]
        return target_logit(
            self.lm, self.seqs("heldout_sentiment"), self.vector, self.coeffs, words["positive"], words["negative"]
        )


def held_out_many(
    lm: LM,
    items: Sequence[tuple[Vector, tuple[float, ...], tuple[float, ...], dict]],
    n: dict[str, int],
    horizon: int,
    concept: Concept,
    pmass_alphas: tuple[float, ...] | None = None,
    examples: int | None = EXAMPLES,
) -> list[HeldOut]:
    """One `HeldOut` per (vector, coeffs, alphas, prov), their generic rollouts and target-axis forwards run in one
    batch for all vectors (`rollout_many`, `target_logit_many`); each HeldOut then sees its own block, so every
    measure reads it as it reads a vector's own rollout. pmass stays one vector at a time (its forks keep every
    row's KV cache; `metrics.branch_pmass`)."""
    helds = [
        HeldOut(lm, v, cs, al, n, horizon, prov, pmass_alphas=pmass_alphas, concept=concept, examples=examples)
        for v, cs, al, prov in items
    ]
    if len(items) < 2:
        return helds
    vectors, coeffs = [v for v, *_ in items], [cs for _, cs, *_ in items]
    generic = rollout_many(lm, helds[0].seqs("heldout_generic"), horizon, vectors, coeffs)
    words = helds[0].probe_words()
    axis = None
    if words is not None:
        axis = target_logit_many(lm, helds[0].seqs("heldout_sentiment"), vectors, coeffs, words["positive"], words["negative"])
    for j, h in enumerate(helds):
        h.joint["generic"] = generic.part(j)
        if axis is not None:
            h.joint["axis"] = axis[generic.layout.doses(j).start : generic.layout.doses(j).stop]
    return helds


def history_rows(res, prov: dict) -> list[dict]:
    """A calibration's solver steps (`CalibrationResult.history`) as history.csv rows: c, p95 and the per-token p95
    and max at every position t of each step's rollouts."""
    return [
        {
            **prov,
            "eval": e + 1,
            "c": h.c,
            "p95": h.p95,
            "complete": int(h.complete),
            "t": t + 1,
            "per_t_p95": h.per_t_p95[t],
            "per_t_max": h.per_t_max[t],
        }
        for e, h in enumerate(res.history)
        for t in range(len(h.per_t_p95))
    ]


Measure = Callable[[HeldOut], list[dict]]
MEASURES: dict[str, tuple[str, Measure]] = {}  # CSV file -> (progress label, function)


def measure(file: str, label: str):
    def register(fn: Measure) -> Measure:
        MEASURES[file] = (label, fn)
        return fn

    return register


@measure("trajectory", "held-out rollouts (per-token KL)")
def trajectory(h: HeldOut) -> list[dict]:
    ro, ids = h.generic, h.ids("heldout_generic")
    if ro.kl is None:  # alpha 0: KL is exactly 0 by construction, not written (docs/decisions.md)
        return []
    out = []
    for k in range(len(h.coeffs)):
        kl, valid = ro.kl[ro.rows(k)].cpu(), ro.valid[ro.rows(k)].cpu()
        for i, pid in enumerate(ids):
            out += [h.row(k, prompt=pid, t=t + 1, kl=float(kl[i, t]), valid=int(valid[i, t])) for t in range(h.horizon)]
    return out


def distinct3(tokens: list[int]) -> float | str:
    """Distinct token trigrams / trigrams of one rollout's valid tokens: 1 = no trigram repeats; "" (not defined) with
    fewer than 3 tokens. Below 0.5 the rollout counts as repetitive (docs/decisions.md, "A degeneration measure")."""
    grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    return len(set(grams)) / len(grams) if grams else ""


@measure("nll", "base NLL of the held-out rollouts")
def nll(h: HeldOut) -> list[dict]:
    """The base model's NLL of each held-out rollout (excess NLL, R3) and its distinct-3 (degeneration)."""
    ro, ids = h.generic, h.ids("heldout_generic")
    scores = ro.logp_base if ro.logp_base is not None else ro.logp  # the base model scores the tokens (alpha 0: its own)
    out = []
    for k in range(len(h.coeffs)):
        valid = ro.valid[ro.rows(k)].cpu()
        toks = ro.tokens[ro.rows(k)].cpu()
        neg = -(scores[ro.rows(k)].cpu() * valid)
        out += [
            h.row(
                k,
                prompt=pid,
                nll_sum=float(neg[i].sum()),
                n_tokens=int(valid[i].sum()),
                distinct3=distinct3(toks[i][valid[i]].tolist()),
            )
            for i, pid in enumerate(ids)
        ]
    return out


@measure("pmass", "true/false rollouts and forks (branch_pmass)")
def pmass(h: HeldOut) -> list[dict]:
    forks = tuple(f for f in FORKS if f <= h.horizon)
    ks = h.doses(h.pmass_alphas)
    coeffs = tuple(h.coeffs[k] for k in ks)
    scored = branch_pmass(h.lm, h.seqs("heldout_truefalse"), h.vector, coeffs, T=h.horizon, forks=forks)
    return [
        h.row(
            k,
            prompt=pid,
            fork_t=t,
            pmass=float(scored.pmass[q, i, j]),
            p_true=float(scored.p_true[q, i, j]),
            censored=int(scored.censored[q, i, j]),
        )
        for q, k in enumerate(ks)
        for i, pid in enumerate(h.ids("heldout_truefalse"))
        for j, t in enumerate(scored.forks)
    ]


@measure("target", "target-axis logits (the concept's probes)")
def target(h: HeldOut) -> list[dict]:
    axis = h.axis
    if axis is None:  # no probes: not measured (no rows), never a silent 0
        return []
    return [
        h.row(k, probe=pid, target_logit=float(axis[k, i]))
        for k in range(len(h.coeffs))
        for i, pid in enumerate(h.ids("heldout_sentiment"))
    ]


def pieces(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """The text each token adds to the decoded continuation, one entry per token (so entry i is the token that
    trajectory row t = i + 1 scores): "".join(pieces) == decode(ids). A token that ends inside a multi-byte character
    adds "" and the token completing it adds the character; a token with no text (end of turn) adds ""."""
    out, done = [], ""
    for i in range(len(ids)):
        full = decode(ids[: i + 1])
        if full.endswith("\ufffd") and i + 1 < len(ids):  # an unfinished character: the next token completes it
            out.append("")
            continue
        n = 0  # common prefix: a tokenizer's clean-up may rewrite the end of what was decoded before
        while n < min(len(full), len(done)) and full[n] == done[n]:
            n += 1
        excess, j = len(done) - n, len(out) - 1
        while excess and j >= 0:  # rewritten text goes to this token: trim it from the end of the earlier pieces
            take = min(excess, len(out[j]))
            out[j], excess, j = out[j][: len(out[j]) - take], excess - take, j - 1
        out.append(full[n:])
        done = full
    return out


@measure("examples", "decoded example continuations")
def examples(h: HeldOut) -> list[dict]:
    """The decoded greedy continuations of the first `h.examples` held-out generic prompts (the study: EXAMPLES; the
    judge: every one) at every dose, and each token's text (`pieces`, a JSON list) for the report's per-token KL view."""
    ro, ids = h.generic, h.ids("heldout_generic")

    def decode(t: list[int]) -> str:
        return h.lm.tokenizer.decode(t, skip_special_tokens=True)

    out = []
    for k in range(len(h.coeffs)):
        toks, valid = ro.tokens[ro.rows(k)].cpu(), ro.valid[ro.rows(k)].cpu()
        for i, pid in enumerate(ids[: h.examples]):
            seq = toks[i][valid[i]].tolist()
            parts = pieces(decode, seq)
            out.append(h.row(k, prompt=pid, text=decode(seq), tokens=json.dumps(parts, ensure_ascii=False)))
    return out


_unknown = sorted(set(MEASURES) - set(FILES))
if _unknown:  # a new measure needs its columns in records.FILES (docs/architecture.md, "A metric")
    raise RuntimeError(f"measures {_unknown} have no schema: add their columns to isokl.study.records.FILES")
