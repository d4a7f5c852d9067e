"""The quick concept study against its budget: R1-R6 for a concept on smollm2-135m in <= 10 minutes on a 2-core CPU.

    .venv/bin/python benchmarks/bench_quick_study.py [--concept examples/concepts/refusal] [--threads 2]

Runs `isokl study --concept C --models smollm2-135m --quick --out TMP` as a fresh process (the model load, the
base rows, every cell and the report included) into a temporary folder, and prints the wall time, its ratio to
the 600 s budget, the per-cell seconds from calibration.csv and the CPU. Nothing else should run meanwhile.
--compare DIR (e.g. results/refusal, the committed run of the same command): each cell's c* against that
folder's, the statuses, and the R1-R6 verdicts of both claims.md files. --only-compare A B: no run, the same
comparison of two existing folders (how results/refusal's README compares its runs).
"""

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name

BUDGET = 600.0  # seconds: issue 20's target for the quick concept study on a 2-core CPU


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", default="examples/concepts/refusal")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", default="", help="a folder of the same study to compare c*, statuses and verdicts with")
    ap.add_argument("--only-compare", nargs=2, metavar=("A", "B"), help="compare two existing folders, run nothing")
    args = ap.parse_args()
    if args.only_compare:
        compare(*map(Path, args.only_compare))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "quick"
        cmd = [sys.executable, "-m", "isokl.cli", "study", "--concept", args.concept, "--models", "smollm2-135m", "--quick"]
        cmd += ["--out", str(out), "--threads", str(args.threads)]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        cells = list(csv.DictReader((out / "calibration.csv").open()))
        if args.compare:
            compare(out, Path(args.compare))
    secs = sorted(float(r["seconds"]) for r in cells)
    print(
        f"quick study of {args.concept} on smollm2-135m: {len(cells)} cells, {wall:.0f} s wall ({args.threads} threads, {cpu_name()})"
    )
    print(f"per-cell seconds: min {secs[0]:.0f}, median {secs[len(secs) // 2]:.0f}, max {secs[-1]:.0f}, sum {sum(secs):.0f}")
    print(f"wall / budget ({BUDGET:.0f} s) = {wall / BUDGET:.2f}")


def compare(out: Path, ref: Path) -> None:
    def cal(d):
        return {(r["method"], r["seed"], r["window"]): r for r in csv.DictReader((d / "calibration.csv").open())}

    def verdicts(d):
        lines = (d / "claims.md").read_text().splitlines()
        return [x.removeprefix("- **").split(".**")[0] for x in lines if x.startswith("- **R")]

    a, b = cal(out), cal(ref)
    both = sorted(set(a) & set(b))
    drift = [abs(float(a[k]["c_star"]) / float(b[k]["c_star"]) - 1) for k in both]
    same = sum(a[k]["status"] == b[k]["status"] for k in both)
    print(
        f"against {ref}: {len(both)} cells in both; c* relative difference max {max(drift):.2g}, median "
        f"{sorted(drift)[len(drift) // 2]:.2g}; same status in {same}/{len(both)}"
    )
    held_out(out, ref)
    print(f"verdicts here: {'; '.join(verdicts(out))}")
    print(f"verdicts there: {'; '.join(verdicts(ref))}")


NUMBERS = {"trajectory": "kl", "nll": "nll_sum", "target": "target_logit", "pmass": "pmass"}


def held_out(out: Path, ref: Path) -> None:
    """The held-out numbers of both folders, row by row (same cell, dose, prompt, token or fork): the largest
    absolute difference per file, and the rows whose greedy text differs (examples.csv)."""
    from isokl.study import records

    def index(d: Path, name: str, col: str) -> dict:
        keyed = {}
        for r in records.read(records.path(d, name), name):
            if r.get("valid") == "0":
                continue  # a token after EOS: not scored (its KL is whatever the decoder left there)
            k = tuple(
                v for c, v in r.items() if c not in (col, "c", "time", "code_version", "p_true", "censored", "valid", "tokens")
            )
            keyed[k] = r[col]
        return keyed

    for name, col in NUMBERS.items():
        a, b = index(out, name, col), index(ref, name, col)
        both = set(a) & set(b)
        diffs = [abs(float(a[k]) - float(b[k])) for k in both if a[k] != "" and b[k] != ""]
        print(
            f"{name}.csv: {len(both)} rows in both ({len(a)} here, {len(b)} there); max |{col} difference| {max(diffs, default=0):.3g}"
        )
    ta, tb = index(out, "examples", "text"), index(ref, "examples", "text")
    diff = [k for k in set(ta) & set(tb) if ta[k] != tb[k]]
    print(f"examples.csv: {len(diff)} of {len(set(ta) & set(tb))} continuations differ in text")


if __name__ == "__main__":
    main()
