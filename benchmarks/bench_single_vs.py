"""One vector's calibration now against an earlier commit, on this machine, side by side (issue 28's speed check).

    .venv/bin/python benchmarks/bench_single_vs.py [--against aca56c9^] [--window 50] [--repeats 3]

`--against REV` is checked out into a temporary git worktree; each round runs the same child script once with that
tree's `src` on PYTHONPATH and once with this tree's, alternating (so a machine that slows down slows both alike),
2 threads each, one at a time. The child loads smollm2-135m, extracts mean_diff (seed 0) and times
`calibrate_iso_kl(lm, vec, 4 calibration prompts, T = window)` (the model load is not timed), printing c* and the
evaluations too: the same c* says the same work was done. The default REV is the commit before the joint solver
(`calibrate_iso_kl` became `calibrate_many` of one vector there). Nothing else should run meanwhile.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(2)
import isokl
from isokl.core.formats import concept
from isokl.core.model import prompts
lm = isokl.load("smollm2-135m")
vec = isokl.extract(lm, concept.extraction_pairs(0), "mean_diff")
cal = prompts.calibration_prompts(0)
calibrate = isokl.calibrate_iso_kl
calibrate(lm, vec, cal, T=4, progress=False)  # warm-up: kernels and caches, not timed
t0 = time.perf_counter()
res = calibrate(lm, vec, cal, T=int(sys.argv[1]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "c_star": res.c_star, "evaluations": res.evaluations}))
"""


def run(src: Path, window: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "ISOKL_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(window)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="aca56c9^", help="the earlier commit (default: before the joint solver)")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.against], cwd=ROOT, capture_output=True, check=True)
        try:
            times: dict[str, list[float]] = {"before": [], "now": []}
            for i in range(args.repeats):
                for name, src in (("before", old / "src"), ("now", ROOT / "src")):
                    r = run(src, args.window)
                    times[name].append(r["seconds"])
                    print(
                        f"round {i + 1} {name:6s}: {r['seconds']:.2f} s, c* = {r['c_star']:.6g}, {r['evaluations']} evaluations"
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    b, n = sorted(times["before"]), sorted(times["now"])
    print(
        f"calibrate_iso_kl, smollm2-135m, mean_diff, 4 prompts, T = {args.window}, 2 threads, {cpu_name()}: "
        f"before ({rev.stdout.strip()}) {b[0]:.2f}-{b[-1]:.2f} s, now {n[0]:.2f}-{n[-1]:.2f} s; "
        f"median now / before = {n[len(n) // 2] / b[len(b) // 2]:.3f}"
    )


if __name__ == "__main__":
    main()
