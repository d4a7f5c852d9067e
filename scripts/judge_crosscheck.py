"""Cross-checks of the judge (issue 26, item 5), written to docs/concepts.md.

    .venv/bin/python scripts/judge_crosscheck.py v2 [--threads 2]
    .venv/bin/python scripts/judge_crosscheck.py rank runs/refusal-grid runs/sentiment-grid

v2: on the built-in sentiment concept at the study's default band, seed 0, T = 20, 4 calibration prompts (the v2
protocol), the three methods and a random-direction control are calibrated jointly on smollm2-135m and judged; each
method's delta logit at 1x is printed beside results/v2's seed-0 T = 20 cell of the same method, computed from its
committed target.csv on the same probes (the judge's first 16), and on all 32 (Table 1's cell), with c* of both.
rank: the Spearman rank correlation between the concept score and the delta logit at alpha 1 across each grid's
vectors (controls excluded), from its grid.csv.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rank(dirs: list[str]) -> None:
    for d in dirs:
        rows = [r for r in csv.DictReader((Path(d) / "grid.csv").open()) if r["rank"] != "control" and r["alpha"] == "1"]
        cs, dl = [float(r["concept"]) for r in rows], [float(r["delta_logit"]) for r in rows]
        bc = [float(r["beyond_control"]) for r in rows]
        bd = [float(r["delta_beyond_control"]) for r in rows]
        print(
            f"{d}: {len(rows)} vectors; Spearman(concept score, delta logit) = {spearman(cs, dl):+.2f}; "
            f"beyond the control: {spearman(bc, bd):+.2f}"
        )


def v2(threads: int) -> None:
    import isokl
    from isokl.core.model.models import set_threads
    from isokl.report.estimate import _delta_rows
    from isokl.report.index import Study
    from isokl.report.ranking import board
    from isokl.study import judge as J
    from isokl.study import records

    set_threads(threads)
    lm = isokl.load("smollm2-135m")
    concept = isokl.Concept.load("sentiment")
    methods = ("mean_diff", "pca", "directional_ablation")
    vecs = [isokl.extract(lm, concept.pairs(0), m) for m in methods]
    ctrl = J.control_vectors(lm, vecs, concept.pairs(0), seed=0)
    joint = isokl.calibrate(lm, [*vecs, *ctrl.values()], concept.calibration(0, 4), T=20, progress=False)
    judged = J.judge(lm, joint.results[:3], concept, controls=dict(zip(ctrl, joint.results[3:], strict=True)), seed=0)
    b = board(judged.rows, judged.settings)
    probes = [p.id for p in concept.probes(judged.settings["n_heldout"]["heldout_sentiment"]) or []]
    print("loading results/v2 ...", file=sys.stderr)
    data = records.load(Path("results/v2"))
    data["target"] = [r for r in data["target"] if r["model"] == "smollm2-135m"]
    s = Study(data)
    from isokl.report.inference import hierarchical

    print(f"smollm2-135m, sentiment, default band {vecs[0].layers[0]}..{vecs[0].layers[-1]}, seed 0, T = 20, 4 prompts")
    print("| method | c* judge | c* v2 | delta logit 1x, judge (16 probes) | v2 cell, same 16 probes | v2 cell, 32 probes |")
    print("| --- | ---: | ---: | --- | --- | --- |")
    for m, res in zip(methods, joint.results[: len(methods)], strict=True):
        e = next(x for x in b.entries if x.name == J.name(res.vector))
        k = ("smollm2-135m", m, 0, 20)
        cal = next(r for r in s.cal if (r["model"], r["method"], r["seed"], r["window"]) == k)
        base = s.target[(("smollm2-135m", "base", None, None), 0.0)]
        mine = s.target[(k, 1.0)]
        same = np.array([mine[p] - base[p] for p in probes])
        e16, e32 = hierarchical([same]), hierarchical([_delta_rows(s, [k], 1.0)])
        fmt = lambda x: f"{x.mean:+.3f} [{x.lo:+.3f}, {x.hi:+.3f}]"
        print(f"| {m} | {res.c_star:.5g} | {cal['c_star']:.5g} | {fmt(e.delta_logit)} | {fmt(e16)} | {fmt(e32)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("v2", "rank"))
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    v2(args.threads) if args.what == "v2" else rank(args.dirs)


if __name__ == "__main__":
    main()
