"""Seconds per sweep cell on each bundled model, and the full study's time extrapolated from them.

    .venv/bin/python benchmarks/bench_cells.py [--models ...] [--method mean_diff]

Runs, per model, the base measurements and the two cells (seed 0, T = 20 and T = 50) of
one method through `isokl.sweep.run_sweep` in a temporary folder, then prints seconds
per cell and the time of the full default study (18 cells per model + the base).
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from isokl.sweep import SweepConfig, run_sweep


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b")
    ap.add_argument("--method", default="mean_diff")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for m in args.models.split(","):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            run_sweep(SweepConfig(models=m, methods=args.method, seeds="0", windows="20,50", out=d))
            total = time.time() - t0
            cal = list(csv.DictReader(open(Path(d) / "calibration.csv")))
        cells = {int(r["window"]): float(r["seconds"]) for r in cal}
        base = total - sum(cells.values())  # loading + base rollouts and scores
        rows.append((m, base, cells.get(20, float("nan")), cells.get(50, float("nan")), [int(r["evaluations"]) for r in cal]))
    print(f"\n{'model':22s} {'base+load s':>11} {'cell T=20 s':>11} {'cell T=50 s':>11} {'evals':>7} | {'18 cells + base':>15}")
    grand = 0.0
    for m, base, c20, c50, ev in rows:
        study = base + 9 * (c20 + c50)
        grand += study
        print(f"{m:22s} {base:11.0f} {c20:11.0f} {c50:11.0f} {str(ev):>7} | {study / 60:13.1f} m")
    print(f"full study (54 cells), extrapolated from these cells: {grand / 60:.0f} min on this machine")


if __name__ == "__main__":
    main()
