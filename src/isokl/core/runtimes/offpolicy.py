"""The off-policy statistic on a fixed text: the steered model teacher-forced on given greedy tokens (a rollout's own,
or the base model's), its per-token KL against the base model on the same prefixes, pooled to the p95.

On a fixed text no token flips as c moves, so p95(c) is smooth there, and one forward scores several doses at once
(no decoding). At the dose that produced the text, it equals the on-policy statistic exactly (the same prefixes).
`TextCurve.solve` finds where it meets the target: a candidate guess for the solver's next dose, measured by
benchmarks/bench_predictors.py (docs/calibration.md); `calibrate` does not use it yet.
"""

from __future__ import annotations

import math

import torch

from ..formats.vector import Vector
from ..model.hooks import steer_rows
from ..model.models import LM, forward, left_pad, pad_id
from ..stats.statistic import P95, TARGET


def _inputs(lm: LM, seqs: list[list[int]], tokens: torch.Tensor, valid: torch.Tensor):
    """Prompt + its valid generated tokens per row, left-padded; the mask [n T] of the generated tokens' places in the
    last T predicting positions (row i's m_i tokens are the last m_i of them)."""
    T = tokens.shape[1]
    n_gen = valid.sum(1).tolist()
    full = [list(s) + tokens[i, :m].tolist() for i, (s, m) in enumerate(zip(seqs, n_gen, strict=True))]
    ids, mask, pos = left_pad(full, pad_id(lm), lm.device)
    where = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, m in enumerate(n_gen):
        where[i, T - m :] = True
    return ids, mask, pos, where


def teacher_forced(lm: LM, ids, mask, pos, T: int, vector: Vector | None, coeffs: list[float]) -> torch.Tensor:
    """Log-probs [k n T V] (float32) of the next token at the last T predicting positions, the model steered by vector at
    each of coeffs (vector None: the base model, k = 1)."""
    n = ids.shape[0]
    k = len(coeffs) if vector is not None else 1
    rep = lambda x: x.repeat(k, 1)
    with torch.inference_mode():
        if vector is None:
            logits = forward(lm.model, ids, mask, pos, keep=T + 1)[:, :-1]
        else:
            c = torch.tensor([c for c in coeffs for _ in range(n)], dtype=torch.float64)
            with steer_rows(lm.model, [(vector, slice(None))], c):
                logits = forward(lm.model, rep(ids), rep(mask), rep(pos), keep=T + 1)[:, :-1]
        return torch.log_softmax(logits.float(), -1).view(k, n, T, -1)


class TextCurve:
    """p95(c) of `vector` teacher-forced on the tokens [n T] (valid [n T]) that followed the prompts `seqs`."""

    def __init__(self, lm: LM, seqs: list[list[int]], vector: Vector, tokens: torch.Tensor, valid: torch.Tensor):
        self.lm, self.vector, self.T = lm, vector, tokens.shape[1]
        self.ids, self.mask, self.pos, self.where = _inputs(lm, seqs, tokens.cpu(), valid.cpu())
        self.base = teacher_forced(lm, self.ids, self.mask, self.pos, self.T, None, [0.0])[0]
        self.seen: dict[float, float] = {}

    def p95s(self, coeffs: list[float]) -> list[float]:
        """The off-policy p95 at each dose, in one forward."""
        lp = teacher_forced(self.lm, self.ids, self.mask, self.pos, self.T, self.vector, coeffs)
        out = []
        for c, x in zip(coeffs, lp, strict=True):
            kl = (x.exp() * (x - self.base)).sum(-1)  # [n T] KL(steered || base)
            out.append(P95.pooled(kl[self.where.to(kl.device)].double().cpu().numpy()))
            self.seen[c] = out[-1]
        return out

    def p95(self, c: float) -> float:
        return self.seen[c] if c in self.seen else self.p95s([c])[0]

    def solve(
        self,
        c0: float,
        p0: float | None = None,
        *,
        target: float = TARGET,
        scale: float = 1.0,
        rtol: float = 2e-3,
        max_forwards: int = 8,
    ) -> float:
        """The c where scale x p95(c) = target, by secants in log-log from c0 (p0: the curve's value at c0 if known,
        e.g. the on-policy p95 of the rollout that wrote the text). Returns the best c found (nan if p95 stays 0)."""
        pts = [(c0, p0 if p0 is not None else self.p95(c0))]
        c = c0 * (target / max(scale * pts[0][1], 1e-12)) ** 0.5 if pts[0][1] > 0 else c0 * 10
        for _ in range(max_forwards):
            v = self.p95(c)
            pts.append((c, v))
            if v > 0 and abs(scale * v / target - 1) <= rtol:
                return c
            good = sorted((p for p in pts if p[1] > 0), key=lambda p: abs(math.log(scale * p[1] / target)))[:2]
            if len(good) < 2:
                c *= 10
                continue
            (ca, va), (cb, vb) = good
            slope = math.log(vb / va) / math.log(cb / ca) if ca != cb else 2.0
            slope = min(max(slope, 0.25), 8.0)
            c = ca * (target / (scale * va)) ** (1 / slope)
        best = min((p for p in pts if p[1] > 0), key=lambda p: abs(math.log(scale * p[1] / target)), default=None)
        return best[0] if best else math.nan
