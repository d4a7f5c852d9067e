"""The sweep serially and on a local Ray cluster, side by side: wall time, and Ray's cost per cell.

    .venv/bin/python benchmarks/bench_cluster.py [--models smollm2-135m] [--workers 2]

1. A grid of the bundled model(s) (default: smollm2-135m, v1-sized cells: 3 methods x 3 seeds
   x 2 windows, 16 held-out prompts) serially with 2 torch threads, then through `--ray` with
   2 workers x 1 CPU, each into a fresh folder; prints both wall times (model loads included)
   and their ratio. On 2 cores, 2 workers x 1 thread do the same arithmetic as 1 process x 2
   threads: expect about equal.
2. Ray's overhead per cell: a grid of tiny-model cells (a random 4-layer model saved to a
   folder; each cell takes well under a second) serially with 1 thread and through Ray with
   1 worker x 1 CPU; (Ray wall - serial wall - cluster start) / cells.
Nothing else should run on the machine meanwhile.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import byte_tokenizer, tiny_model
from isokl.study.cluster import connect, run_sweep_ray
from isokl.study.sweep import SweepConfig, run_sweep


def timed(fn) -> float:
    t0 = time.time()
    fn()
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiny-cells", type=int, default=24, help="cells of the overhead grid (methods x seeds)")
    args = ap.parse_args()
    grid = dict(models=args.models, n_heldout="16")
    with tempfile.TemporaryDirectory() as d:
        torch.set_num_threads(2)
        serial = timed(lambda: run_sweep(SweepConfig(**grid, out=f"{d}/serial")))
        ray = timed(lambda: run_sweep_ray(SweepConfig(**grid, out=f"{d}/ray"), "local", cpus_per_cell=1, workers=args.workers))
        print(
            f"\n{args.models}, 18 cells + base: serial (1 process x 2 threads) {serial:.0f} s; "
            f"--ray ({args.workers} workers x 1 CPU) {ray:.0f} s; ratio ray / serial {ray / serial:.2f}"
        )

        model = Path(d) / "tiny-llama"
        tiny_model("llama", dtype=torch.float32, seed=3).save_pretrained(model)
        byte_tokenizer().save_pretrained(model)
        seeds = ",".join(str(s) for s in range(args.tiny_cells // 2))
        tiny = dict(models=str(model), methods="mean_diff,pca", seeds=seeds, windows="6", n_heldout="3", horizon=10)
        torch.set_num_threads(1)
        t_serial = timed(lambda: run_sweep(SweepConfig(**tiny, out=f"{d}/tiny-serial")))
        t_start = timed(lambda: connect("local", 1).shutdown())
        t_ray = timed(lambda: run_sweep_ray(SweepConfig(**tiny, out=f"{d}/tiny-ray"), "local", cpus_per_cell=1, workers=1))
        cells = args.tiny_cells + 1
        print(
            f"tiny grid, {cells} cells (base included): serial {t_serial:.1f} s; Ray, 1 worker x 1 CPU, {t_ray:.1f} s, of "
            f"which starting and stopping a local cluster {t_start:.1f} s; overhead per cell "
            f"{(t_ray - t_serial - t_start) / cells * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
