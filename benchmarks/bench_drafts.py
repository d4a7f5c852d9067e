"""Drafted against plain calibration rollouts on the larger bundled models, one calibration each.

    .venv/bin/python benchmarks/bench_drafts.py

For three (model, method, seed, T) cases of the study, calibrates with draft=True and
draft=False in one run and prints both wall times, the evaluation counts, and how far
the two solver paths differ (float rounding: a several-token against a one-token forward).
"""

import time

import torch

from isokl import load
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.model import prompts

CASES = [
    ("gemma3-270m", "directional_ablation", 0, 20),
    ("qwen2.5-coder-0.5b", "directional_ablation", 1, 20),
    ("qwen2.5-coder-0.5b", "mean_diff", 1, 50),
]


def main():
    torch.set_num_threads(2)
    for model, method, seed, T in CASES:
        lm = load(model)
        vec = extract(lm, concept.extraction_pairs(seed), method)
        cal = prompts.calibration_prompts(seed)
        out = {}
        for d in (True, False):
            t0 = time.perf_counter()
            r = calibrate_iso_kl(lm, vec, cal, T=T, progress=False, draft=d)
            out[d] = (time.perf_counter() - t0, r)
        (ta, a), (tb, b) = out[True], out[False]
        same = a.evaluations == b.evaluations
        dc = max(abs(x.c / y.c - 1) for x, y in zip(a.history, b.history, strict=True)) if same else float("nan")
        dp = max(abs(x.p95 - y.p95) for x, y in zip(a.history, b.history, strict=True)) if same else float("nan")
        print(
            f"{model} {method} s{seed} T{T}: drafts {ta:.1f} s / plain {tb:.1f} s = {tb / ta:.2f}x; "
            f"evals {a.evaluations} / {b.evaluations}, {a.status} / {b.status}, c* {a.c_star:.6g} / {b.c_star:.6g}; "
            f"largest relative difference of c {dc:.1e}, of p95 {dp:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
