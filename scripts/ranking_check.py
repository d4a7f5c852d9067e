"""Which reading ranks the board (docs/decisions.md, "A ranking that holds up"; its figures in docs/concepts.md).

    .venv/bin/pip install vaderSentiment==3.3.2
    .venv/bin/python scripts/ranking_check.py [--out runs/ranking] [--threads 2]
    .venv/bin/python scripts/ranking_check.py --evaluate-only [--out runs/ranking]

The README's 3 x 3 grid (mean_diff, pca, directional_ablation x layers 0.2-0.4 / 0.4-0.6 / 0.6-0.8) on smollm2-135m,
the built-in sentiment concept, seed 0, T = 20, 16 calibration prompts, with its three controls, calibrated jointly
once and judged at alpha 1 with 24, 48 and 64 held-out prompts (OUT/n24/judge/, ...). Then, for each size and each
candidate ranking reading (concept score, delta logit, the behavioural question), both beyond the control: Spearman's
rank correlation with VADER's shift beyond the control over the nine vectors and over the six additive ones, and the
share of the vector pairs VADER separates (95% intervals apart) that the reading orders the same way; the 95%
half-width of each reading; the seconds of the calibration and of each judging. Prints markdown; writes
OUT/ranking.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from outside_check import ADDITIVE, bootstrap, spearman

METHODS = ("mean_diff", "pca", "directional_ablation")
BANDS = ("0.2-0.4", "0.4-0.6", "0.6-0.8")
SIZES = (24, 48, 64)
CANDIDATES = ("concept", "delta_logit", "question")
GOALS = (0.75, 0.5, 0.9)  # Spearman over the nine, over the additive six, share of separated pairs


def run(out: Path, threads: int) -> None:
    import isokl
    from isokl.core.model.models import set_threads
    from isokl.study.flags import layers

    set_threads(threads)
    lm = isokl.load("smollm2-135m")
    concept = isokl.Concept.load("sentiment")
    pairs = concept.pairs(0)
    vecs = [isokl.extract(lm, pairs, m, layers=layers("--layers", b, lm.n_layers)) for m in METHODS for b in BANDS]
    t0 = time.time()
    grid = isokl.calibrate(lm, vecs, concept.calibration(0, 16), T=20, controls=True, pairs=pairs, seed=0, progress=False)
    seconds = {"calibration": time.time() - t0}
    print(f"calibrated {len(vecs)} vectors and {len(grid.controls)} controls in {seconds['calibration']:.1f} s", file=sys.stderr)
    for n in SIZES:
        t0 = time.time()
        isokl.judge(lm, grid, concept, seed=0, heldout=n, out=out / f"n{n}", progress=False)
        seconds[f"judge_{n}"] = time.time() - t0
        print(f"judged at {n} held-out prompts in {seconds[f'judge_{n}']:.1f} s", file=sys.stderr)
    (out / "seconds.json").write_text(json.dumps({k: round(v, 1) for k, v in seconds.items()}, indent=1) + "\n")


def vader_beyond(folder: Path) -> dict[str, np.ndarray]:
    """Per vector: VADER's shift of each reply against the base reply, minus its control's, per prompt (sorted)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from isokl.study.records import judge_rows

    vader = SentimentIntensityAnalyzer()
    data, settings = judge_rows(folder)
    score = {(r["method"], r["prompt"]): vader.polarity_scores(r["text"])["compound"] for r in data["examples"]}
    prompts = sorted({p for m, p in score if m == "base"})
    shift = {m: np.array([score[(m, p)] - score[("base", p)] for p in prompts]) for m in {m for m, _ in score} - {"base"}}
    return {m: shift[m] - shift[c] for m, c in settings["control_of"].items()} | {f"{m} (raw)": shift[m] for m in shift}


def evaluate(out: Path) -> str:
    from isokl.report import ranking

    seconds = json.loads((out / "seconds.json").read_text()) if (out / "seconds.json").is_file() else {}
    text = ["# Which reading ranks the board: the sentiment grid against VADER", ""]
    text += [f"Seconds (this run): {json.dumps(seconds)}", ""]
    for n in SIZES:
        folder = out / f"n{n}"
        if not (folder / "judge").is_dir():
            continue
        board = ranking.load(folder)
        one = [e for e in board.at(1.0) if not e.is_control]
        names = [e.name for e in one]
        additive = [e.name for e in one if e.method in ADDITIVE]
        v = vader_beyond(folder)
        vb = {k: bootstrap(v[k]) for k in names}
        apart = [(a, b) for a, b in itertools.combinations(names, 2) if vb[a][1] > vb[b][2] or vb[b][1] > vb[a][2]]
        text += [
            f"## {n} held-out prompts ({len(apart)} of {len(names) * (len(names) - 1) // 2} vector pairs apart by VADER)",
            "",
        ]
        text += ["| vector | VADER beyond ctrl | " + " | ".join(f"{c} beyond ctrl" for c in CANDIDATES) + " |"]
        text += ["| --- | --- | " + " | ".join("---" for _ in CANDIDATES) + " |"]
        for e in one:
            cells = [_iv(e.reading(c)) for c in CANDIDATES]
            text.append(
                f"| {e.name} | {vb[e.name][0]:+.3f} [{vb[e.name][1]:+.3f}, {vb[e.name][2]:+.3f}] | " + " | ".join(cells) + " |"
            )
        text += ["", "| reading | Spearman, 9 vectors | Spearman, 6 additive | separated pairs same order | goals met | "
                 "median 95% half-width | Spearman, 12 rows vs base (raw) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        every = [e for e in board.at(1.0)]
        for c in CANDIDATES:
            r = {e.name: e.reading(c) for e in one}
            if any(x is None for x in r.values()):
                text.append(f"| {c} | not measured | | | | | |")
                continue
            mean = {k: x.mean for k, x in r.items()}
            s9 = spearman([mean[k] for k in names], [vb[k][0] for k in names])
            s6 = spearman([mean[k] for k in additive], [vb[k][0] for k in additive])
            same = sum((mean[a] - mean[b]) * (vb[a][0] - vb[b][0]) > 0 for a, b in apart)
            share = same / len(apart) if apart else float("nan")
            met = sum(x >= g for x, g in zip((s9, s6, share), GOALS, strict=True))
            half = float(np.median([(x.hi - x.lo) / 2 for x in r.values()]))
            raw = spearman([e.own(c).mean for e in every], [v[f"{e.name} (raw)"].mean() for e in every])
            text.append(
                f"| {c} | {s9:+.2f} | {s6:+.2f} | {same}/{len(apart)} ({share:.0%}) | {met} of 3 | {half:.3g} | {raw:+.2f} |"
            )
        text.append("")
    md = "\n".join(text) + "\n"
    (out / "ranking.md").write_text(md)
    return md


def _iv(e) -> str:
    return "not measured" if e is None else f"{e.mean:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ranking"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evaluate-only", action="store_true", help="read the judged folders of an earlier run")
    args = ap.parse_args()
    try:
        import vaderSentiment  # noqa: F401
    except ImportError:
        print("ranking_check: needs vaderSentiment: .venv/bin/pip install vaderSentiment==3.3.2", file=sys.stderr)
        return 1
    if not args.evaluate_only:
        run(args.out, args.threads)
    print(evaluate(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
