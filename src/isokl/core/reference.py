"""Reference: the deliberately simple calibration path, for tests and the speed benchmark.

One prompt at a time: Hugging Face `generate` (greedy, every EOS id), then two full
forwards over prompt + rollout (steered, then base) and per-token KL; the solver is
plain bisection on log c after doubling/halving to a bracket. This is how a typical
public implementation computes the same statistic. Nothing here is reused between
prompts or solver steps, which is what makes it a trustworthy cross-check of
`rollout.evaluate` (tests require agreement to 1e-4).
"""

from __future__ import annotations

import math
import sys
import time

import torch

from .formats.vector import Vector
from .methods import get_method
from .model.hooks import steer
from .model.models import LM, pad_id
from .runtimes.rollout import KLStats, kl_rows, kl_stats
from .stats.statistic import TARGET, TOL


@torch.no_grad()
def reference_kl(lm: LM, seqs: list[list[int]], vector: Vector, c: float, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL [n t] and validity [n t], one prompt at a time with full forwards."""
    kl = torch.zeros((len(seqs), T), dtype=torch.float64)
    valid = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, seq in enumerate(seqs):
        ids = torch.tensor([seq], device=lm.device)
        with steer(lm.model, vector, c):
            out = lm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=T,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=1.0,
                eos_token_id=list(lm.eos_ids),
                pad_token_id=pad_id(lm),
            )
        gen = out[0, len(seq) :].tolist()
        if lm.eos_ids:  # generate pads after EOS; keep up to and including the first EOS
            stop = next((j for j, x in enumerate(gen) if x in lm.eos_ids), len(gen) - 1)
            gen = gen[: stop + 1]
        full = torch.tensor([seq + gen], device=lm.device)
        span = slice(len(seq) - 1, len(seq) - 1 + len(gen))  # logits at these positions predict gen
        with steer(lm.model, vector, c):
            lp = torch.log_softmax(lm.model(full).logits[0, span].double(), -1)
        lq = torch.log_softmax(lm.model(full).logits[0, span].double(), -1)
        kl[i, : len(gen)] = kl_rows(lp, lq).cpu()
        valid[i, : len(gen)] = True
    return kl, valid


def reference_stats(lm: LM, seqs: list[list[int]], vector: Vector, c: float, T: int) -> KLStats:
    kl, valid = reference_kl(lm, seqs, vector, c, T)
    return kl_stats(kl, valid, c)


def reference_calibrate(
    lm: LM,
    vector: Vector,
    seqs: list[list[int]],
    T: int,
    target: float = TARGET,
    tol: float = TOL,
    max_evals: int = 40,
    progress: bool = False,
    c0: float | None = None,
) -> tuple[float, float, int]:
    """Plain bisection on log c from c0 (default: isokl's own first guess) -> (c, p95 at c, evaluations)."""
    n = 0

    def f(c: float) -> float:
        nonlocal n
        n += 1
        t0 = time.time()
        p = reference_stats(lm, seqs, vector, c, T).p95
        if progress:
            print(f"  ref eval {n:2d}: c = {c:10.4g}  p95 = {p:8.4f}  ({time.time() - t0:.1f} s)", file=sys.stderr, flush=True)
        return p

    c = c0 if c0 is not None else get_method(vector.method).initial_coeff(vector)
    p = f(c)
    lo, hi = (c, None) if p < target else (None, c)
    while (lo is None or hi is None) and abs(p - target) > tol and n < max_evals:
        c = c * 2 if hi is None else c / 2
        p = f(c)
        if p < target:
            lo = c
        else:
            hi = c
    if lo is None or hi is None:  # no bracket within max_evals (or converged while bracketing)
        return c, p, n
    while abs(p - target) > tol and n < max_evals:
        c = math.sqrt(lo * hi)
        p = f(c)
        if p < target:
            lo = c
        else:
            hi = c
    return c, p, n
