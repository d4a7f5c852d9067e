"""The quick concept study against its budget: R1-R6 for a concept on smollm2-135m in <= 10 minutes on a 2-core CPU.

    .venv/bin/python benchmarks/bench_quick_study.py [--concept examples/concepts/refusal] [--threads 2]

Runs `isokl study --concept C --models smollm2-135m --quick --out TMP` as a fresh process (the model load, the
base rows, every cell and the report included) into a temporary folder, and prints the wall time, its ratio to
the 600 s budget, the per-cell seconds from calibration.csv and the CPU. Nothing else should run meanwhile.
"""

import argparse
import csv
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET = 600.0  # seconds: issue 20's target for the quick concept study on a 2-core CPU


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", default="examples/concepts/refusal")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "quick"
        cmd = [sys.executable, "-m", "isokl.cli", "study", "--concept", args.concept, "--models", "smollm2-135m", "--quick"]
        cmd += ["--out", str(out), "--threads", str(args.threads)]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        cells = list(csv.DictReader((out / "calibration.csv").open()))
    secs = sorted(float(r["seconds"]) for r in cells)
    print(
        f"quick study of {args.concept} on smollm2-135m: {len(cells)} cells, {wall:.0f} s wall ({args.threads} threads, {cpu()})"
    )
    print(f"per-cell seconds: min {secs[0]:.0f}, median {secs[len(secs) // 2]:.0f}, max {secs[-1]:.0f}, sum {sum(secs):.0f}")
    print(f"wall / budget ({BUDGET:.0f} s) = {wall / BUDGET:.2f}")


if __name__ == "__main__":
    main()
