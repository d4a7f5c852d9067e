"""Seconds per sweep cell on each bundled model, the full study extrapolated, and its compute floor.

    .venv/bin/python benchmarks/bench_cells.py [--models ...] [--method mean_diff]

Runs, per model, the base measurements and the two cells (seed 0, T = 20 and T = 50) of
one method through `isokl.study.sweep.run_sweep` in a temporary folder, then prints seconds
per cell and the time of the full default study (18 cells per model + the base).

It also counts the multiply-adds of every nn.Linear call during those cells (forward
hooks; attention scores and element-wise ops are not counted) and measures this
machine's float32 matmul throughput on large products and on a 64-row, decode-shaped
one. FLOPs / large-product rate is a lower bound on the time of the same work in float32
on this machine, short of doing less arithmetic; most of the study's FLOPs are decode
steps of 8-64 rows, whose products run nearer the second rate.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from isokl.core.model.models import load
from isokl.study import records
from isokl.study.sweep import SweepConfig, run_sweep


def gemm_flops_per_s(m: int, k: int, n: int, reps: int = 5, trials: int = 3) -> float:
    """Best of `trials` timings of an [m k] x [k n] float32 product (after one untimed run)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


def matmul_rates() -> tuple[float, float]:
    """(best rate of large products, rate of a decode-shaped product with 64 rows), FLOP/s."""
    large = max(gemm_flops_per_s(2048, 2048, 2048), gemm_flops_per_s(2048, 896, 4864), gemm_flops_per_s(2048, 576, 1536))
    return large, gemm_flops_per_s(64, 896, 4864, reps=50)


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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="", help="keep the cells in this folder (a study folder: they resume there)")
    for flag in ("n_heldout", "alphas", "dose_alphas", "dose_windows"):  # the protocol, as `isokl sweep` takes it
        ap.add_argument("--" + flag.replace("_", "-"), default=getattr(SweepConfig, flag))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    protocol = {f: getattr(args, f) for f in ("n_heldout", "alphas", "dose_alphas", "dose_windows")}
    print(f"protocol: {protocol}, {args.threads} threads")
    peak, skinny = matmul_rates()
    rows = []
    for m in args.models.split(","):
        lm = load(m)
        counter = LinearFlops(lm.model)
        with tempfile.TemporaryDirectory() as tmp:
            d = args.out or tmp
            t0 = time.time()
            cfg = SweepConfig(models=m, methods=args.method, seeds="0", windows="20,50", out=d, **protocol)
            run_sweep(cfg, loader=lambda *a, **k: lm)
            total = time.time() - t0
            cal = [r for r in records.read(Path(d) / "calibration.csv", "calibration") if r["model"] == m]
        counter.close()
        cells = {int(r["window"]): float(r["seconds"]) for r in cal}
        base = total - sum(cells.values())  # base rollouts and scores
        rows.append(
            (
                m,
                base,
                cells.get(20, float("nan")),
                cells.get(50, float("nan")),
                [int(r["evaluations"]) for r in cal],
                total,
                counter.flops,
            )
        )
        del lm
    print(
        f"\nfloat32 matmul throughput, {args.threads} threads: {peak / 1e9:.0f} GFLOP/s for large products (best of 2048 x 2048 x 2048, "
        f"2048 x 896 x 4864, 2048 x 576 x 1536), {skinny / 1e9:.0f} GFLOP/s for a 64-row decode-shaped one (64 x 896 x 4864)"
    )
    print(
        f"{'model':22s} {'base s':>7} {'cell T=20 s':>11} {'cell T=50 s':>11} {'evals':>7} | {'18 cells + base':>15} | "
        f"{'linear TFLOP':>12} {'floor s':>8} {'measured/floor':>14} {'achieved GFLOP/s':>16}"
    )
    grand = grand_floor = 0.0
    for m, base, c20, c50, ev, total, flops in rows:
        study = base + 9 * (c20 + c50)
        floor = flops / peak  # for base + 2 cells
        grand, grand_floor = grand + study, grand_floor + floor * study / total  # the same proportion over the full study
        print(
            f"{m:22s} {base:7.0f} {c20:11.0f} {c50:11.0f} {ev!s:>7} | {study / 60:13.1f} m | "
            f"{flops / 1e12:12.2f} {floor:8.0f} {total / floor:13.2f}x {flops / total / 1e9:16.0f}"
        )
    print(f"full study (54 cells), extrapolated from these cells: {grand / 60:.0f} min on this machine")
    print(
        f"its compute floor (linear-layer FLOPs at the large-product rate): {grand_floor / 60:.0f} min; "
        f"at the decode-shaped rate: {grand_floor * peak / skinny / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
