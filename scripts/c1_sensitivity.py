"""C1 sensitivity check (issue 20; protocol in docs/decisions.md, "C1 sensitivity check", frozen before this ran):
v2's two R1 failures recomputed with 16 calibration prompts instead of the spec's 4, same held-out set.

For each cell: the seed's vector (seed 0's 4 contrast pairs, as in v2), calibrated at T = 20 on (a) the 4 prompts
v2 used, a recomputation that must give v2's committed c* back, and (b) seed 0's draw of 16 prompts from the same
calibration pool; then the held-out p95 over the first 20 tokens of the first 64 generic held-out prompts at each c*,
with its 90% prompt-bootstrap interval (as `records.holdout_columns`), against R1's band [0.7, 1.4]. Prints a markdown
table. Run: .venv/bin/python scripts/c1_sensitivity.py --threads 2   (about 6 minutes on a 2-core CPU)
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from isokl import load
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats.concept import Concept
from isokl.core.model.models import set_threads
from isokl.core.runtimes.rollout import rollout
from isokl.core.stats.statistic import P95
from isokl.report.thresholds import in_band
from isokl.study.records import HOLDOUT_LEVEL

CELLS = (("gemma3-270m", "pca", 0, 20), ("smollm2-135m", "directional_ablation", 0, 20))
V2 = Path(__file__).parents[1] / "results" / "v2" / "calibration.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-heldout", type=int, default=64)
    args = ap.parse_args()
    threads = set_threads(args.threads)
    concept = Concept.load("sentiment")
    committed = {(r["model"], r["method"], int(r["seed"]), int(r["window"])): r for r in csv.DictReader(V2.open())}
    held = concept.heldout(args.n_heldout)
    lines = [
        "| cell | calibration prompts | c* [95% interval] | status | calib p95 | held-out p95 (t <= 20) [90% interval] | in band |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    t0 = time.time()
    for model, method, seed, T in CELLS:
        lm = load(model)
        vec = extract(lm, concept.pairs(seed), method)
        seqs = lm.encode([lm.format(p) for p in held])
        v2 = committed[(model, method, seed, T)]
        lines.append(
            f"| {model} {method} s{seed} T{T} | 4 (v2, committed) | {float(v2['c_star']):.4g} | {v2['status']} | "
            f"{float(v2['calib_p95']):.3f} | {float(v2['holdout_p95_t20']):.3f} [{float(v2['holdout_p95_t20_lo']):.3f}, "
            f"{float(v2['holdout_p95_t20_hi']):.3f}] | {'yes' if in_band(float(v2['holdout_p95_t20'])) else 'no'} |"
        )
        for n in (4, 16):
            res = calibrate_iso_kl(lm, vec, concept.calibration(seed, n), T=T, progress=False)
            ro = rollout(lm, seqs, T, res.vector, (res.c_star,))
            kl = ro.stats(0).per_prompt
            assert kl is not None
            p = P95.pooled(kl[~np.isnan(kl)])  # as `records.holdout_columns` computes holdout_p95_t20
            lo, hi = P95.prompt_interval(kl, level=HOLDOUT_LEVEL)
            label = "4 (recomputed here)" if n == 4 else "16 (seed 0's draw)"
            lines.append(
                f"| {model} {method} s{seed} T{T} | {label} | {res.c_star:.4g} [{res.c_interval.lo:.4g}, "
                f"{res.c_interval.hi:.4g}] | {res.status} | {res.p95:.3f} | {p:.3f} [{lo:.3f}, {hi:.3f}] | "
                f"{'yes' if in_band(p) else 'no'} |"
            )
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))
    print(f"\n{len(held)} held-out prompts; {time.time() - t0:.0f} s with model loads, {threads} threads")


if __name__ == "__main__":
    main()
