"""How well c* is pinned by N calibration prompts: the 95% interval (`P95.crossing_interval`) by N, and its coverage.

    .venv/bin/python benchmarks/bench_interval.py                  # smollm2-135m, mean_diff, T = 20, N = 4, 8, 16, 32
    .venv/bin/python benchmarks/bench_interval.py --synthetic      # coverage on a population with a known crossing

Real model: one vector (seed 0 pairs), calibrated on the first N prompts of the calibration
pool followed by the held-out generic pool (32 prompts need both; this is a measurement,
not the study), printing c*, its interval and the interval's half-width relative to c*.
Synthetic: per-token KL = scale_i x profile_t x c^2 with scale ~ lognormal(0, 0.6); the
solver runs on a sample of N prompts, and the table gives how often the interval holds the
population's crossing, and how often the sample's c* lies above it.
"""

import argparse
import math
import time

import numpy as np
import torch

from isokl.core.calibrate import solve
from isokl.core.formats import concept
from isokl.core.stats.statistic import P95


def synthetic(reps: int) -> None:
    rng = np.random.default_rng(1)
    profile = rng.gamma(0.5, 1.0, size=20)
    population = (rng.lognormal(0, 0.6, size=200_000)[:, None] * profile[None]).ravel()
    c_true = math.sqrt(1.0 / float(np.quantile(population, 0.95)))
    print(f"synthetic population, {reps} samples per N: coverage of the 95% interval, median half-width / c*, c* > truth")
    for n in (4, 8, 16, 32):
        hits, widths, high = 0, [], 0
        for _ in range(reps):
            scales, evaluated = rng.lognormal(0, 0.6, size=n), {}

            def f(c, scales=scales, evaluated=evaluated):
                evaluated[c] = scales[:, None] * profile[None] * c**2
                return P95.pooled(evaluated[c].ravel())

            s = solve(f, c0=c_true * rng.uniform(0.5, 2.0))
            band = P95.crossing_interval(list(evaluated.items()), 1.0)
            hits += band.lo <= c_true <= band.hi
            widths.append((band.hi - band.lo) / 2 / s.c)
            high += s.c > c_true
        print(f"N = {n:2d}: coverage {hits / reps:.3f}, half-width {np.median(widths):.1%}, c* above truth in {high / reps:.0%}")


def real(model: str, method: str, T: int, threads: int) -> None:
    from isokl import load
    from isokl.core.calibrate import calibrate_iso_kl
    from isokl.core.extract import extract
    from isokl.core.model import prompts

    torch.set_num_threads(threads)
    lm = load(model)
    vec = extract(lm, concept.extraction_pairs(0), method)
    pool = prompts.pool("calibration") + prompts.pool("heldout_generic")
    print(f"{model} {method} T = {T}, {threads} threads: c* and its 95% interval by number of calibration prompts N")
    for n in (4, 8, 16, 32):
        t0 = time.perf_counter()
        res = calibrate_iso_kl(lm, vec, pool[:n], T=T, progress=False)
        b = res.c_interval
        print(
            f"N = {n:2d}: c* = {res.c_star:.4g} ({res.status}, p95 {res.p95:.3f}, {res.evaluations} evals), interval "
            f"[{b.lo:.4g}, {b.hi:.4g}] = -{1 - b.lo / res.c_star:.0%} / +{b.hi / res.c_star - 1:.0%}"
            f"{' (open-ended)' if b.open_ended else ''}  [{time.perf_counter() - t0:.1f} s]",
            flush=True,
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="coverage on a synthetic population instead of a real model")
    ap.add_argument("--reps", type=int, default=300, help="synthetic samples per N")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="mean_diff")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.synthetic:
        synthetic(a.reps)
    else:
        real(a.model, a.method, a.window, a.threads)
