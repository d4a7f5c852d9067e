"""Seconds per sweep cell on each bundled model, the full study extrapolated, and its compute floor.

    .venv/bin/python benchmarks/bench_cells.py [--models ...] [--method mean_diff]

Runs, per model, the base measurements and the two cells (seed 0, T = 20 and T = 50) of
one method through `isokl.sweep.run_sweep` in a temporary folder, then prints seconds
per cell and the time of the full default study (18 cells per model + the base).

It also counts the multiply-adds of every nn.Linear call during those cells (forward
hooks; attention scores and element-wise ops are not counted) and measures this
machine's float32 matmul throughput on a large square product. Their quotient is a
lower bound on the time of the same work: no implementation of this protocol in float32
on this machine can be faster, short of doing less arithmetic.
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from isokl.models import load
from isokl.sweep import SweepConfig, run_sweep


def gemm_flops_per_s(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


class LinearFlops:
    """Counts 2 x in x out x rows for every nn.Linear forward of a model."""

    def __init__(self, model):
        self.flops = 0
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def _hook(self, mod, args, out):
        self.flops += 2 * mod.in_features * mod.out_features * (args[0].numel() // mod.in_features)

    def close(self):
        for h in self.handles:
            h.remove()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b")
    ap.add_argument("--method", default="mean_diff")
    args = ap.parse_args()
    torch.set_num_threads(2)
    peak = gemm_flops_per_s()
    rows = []
    for m in args.models.split(","):
        lm = load(m)
        counter = LinearFlops(lm.model)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            run_sweep(SweepConfig(models=m, methods=args.method, seeds="0", windows="20,50", out=d), loader=lambda *a, **k: lm)
            total = time.time() - t0
            cal = list(csv.DictReader(open(Path(d) / "calibration.csv")))
        counter.close()
        cells = {int(r["window"]): float(r["seconds"]) for r in cal}
        base = total - sum(cells.values())  # base rollouts and scores
        rows.append((m, base, cells.get(20, float("nan")), cells.get(50, float("nan")),
                     [int(r["evaluations"]) for r in cal], total, counter.flops))
        del lm
    print(f"\nfloat32 matmul throughput (2048 x 2048, 2 threads): {peak / 1e9:.0f} GFLOP/s")
    print(f"{'model':22s} {'base s':>7} {'cell T=20 s':>11} {'cell T=50 s':>11} {'evals':>7} | {'18 cells + base':>15} | "
          f"{'linear TFLOP':>12} {'floor s':>8} {'measured/floor':>14}")
    grand = grand_floor = 0.0
    for m, base, c20, c50, ev, total, flops in rows:
        study = base + 9 * (c20 + c50)
        floor = flops / peak  # for base + 2 cells
        study_floor = floor * study / total  # the same proportion over the full study
        grand, grand_floor = grand + study, grand_floor + study_floor
        print(f"{m:22s} {base:7.0f} {c20:11.0f} {c50:11.0f} {str(ev):>7} | {study / 60:13.1f} m | "
              f"{flops / 1e12:12.2f} {floor:8.0f} {total / floor:13.2f}x")
    print(f"full study (54 cells), extrapolated from these cells: {grand / 60:.0f} min on this machine")
    print(f"its compute floor (linear-layer FLOPs at the measured matmul throughput): {grand_floor / 60:.0f} min")


if __name__ == "__main__":
    main()
