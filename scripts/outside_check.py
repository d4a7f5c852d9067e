"""The judge checked from outside (docs/decisions.md, "One ruler for every vector"): every continuation a judged grid
kept, scored by VADER (`vaderSentiment` from PyPI: a lexicon and rules shipped in the package, nobody on this project
wrote it, nothing downloaded), paired per prompt against the base model's continuation, and compared with the
board's concept effect by rank.

    .venv/bin/isokl calibrate --method mean_diff,pca,directional_ablation --layers 0.2-0.4/0.4-0.6/0.6-0.8 \\
        --seed 0 --window 20 --out runs/sentiment-grid
    .venv/bin/pip install vaderSentiment==3.3.2 && .venv/bin/python scripts/outside_check.py runs/sentiment-grid

Prints, at alpha 1: each row's board effect and VADER shift with 95% bootstrap intervals over prompts; Spearman's rank
correlation over every row (vectors and controls) and over the additive vectors (mean_diff, pca) alone; and whether
the board's top vector lies within VADER's interval of VADER's best. Reads files only.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from isokl.study.records import judge_rows

ADDITIVE = ("mean_diff", "pca")
RESAMPLES = 10_000


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95% percentile bootstrap interval over prompts."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path, help="a judged grid folder (isokl calibrate --out DIR with several vectors)")
    args = ap.parse_args()
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        print("outside_check: needs vaderSentiment: .venv/bin/pip install vaderSentiment==3.3.2", file=sys.stderr)
        return 1
    vader = SentimentIntensityAnalyzer()
    data, settings = judge_rows(args.grid)
    texts = data["examples"]
    base = {r["prompt"]: vader.polarity_scores(r["text"])["compound"] for r in texts if r["method"] == "base"}
    shifts: dict[str, dict[str, float]] = {}
    for r in texts:
        if r["method"] != "base" and float(r["alpha"]) == 1.0:
            shifts.setdefault(r["method"], {})[r["prompt"]] = vader.polarity_scores(r["text"])["compound"] - base[r["prompt"]]
    scores: dict[str, dict[str, float]] = {}
    for r in data["concept_score"]:
        if float(r["alpha"]) == 1.0:
            scores.setdefault(r["method"], {})[r["prompt"]] = float(r["score"])
    with (args.grid / "grid.csv").open() as f:
        order = [r["name"] for r in csv.DictReader(f) if float(r["alpha"]) == 1.0]
    missing = [n for n in order if len(shifts.get(n, {})) != len(base)]
    if missing:
        print(f"outside_check: {', '.join(missing)} lack continuations for some prompts: judged before every text was kept?")
        return 1
    print(f"# {args.grid}: {settings['model']}, concept {settings['concept']}, seed {settings['seed']}, T = {settings['window']}")
    print(f"board: concept score at block {settings.get('concept_block', '(each vector at its own layers)')}; VADER: compound")
    print(f"{len(base)} held-out prompts; 95% bootstrap intervals over prompts ({RESAMPLES} resamples), alpha 1\n")
    print("| vector | board effect | VADER shift |\n| --- | --- | --- |")
    board, outside = {}, {}
    for name in order:
        prompts = sorted(base)
        board[name] = bootstrap(np.array([scores[name][p] for p in prompts]))
        outside[name] = bootstrap(np.array([shifts[name][p] for p in prompts]))
        b, o = board[name], outside[name]
        print(f"| {name} | {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}] | {o[0]:+.3f} [{o[1]:+.3f}, {o[2]:+.3f}] |")
    additive = [n for n in order if n.split("@")[0] in ADDITIVE]
    every = spearman([board[n][0] for n in order], [outside[n][0] for n in order])
    adds = spearman([board[n][0] for n in additive], [outside[n][0] for n in additive])
    vectors = [n for n in order if not n.startswith("random_direction")]
    top = max(vectors, key=lambda n: board[n][0])
    best = max(vectors, key=lambda n: outside[n][0])
    inside = outside[best][1] <= outside[top][0] <= outside[best][2]
    print(
        f"\nSpearman, board vs VADER: {every:+.2f} over all {len(order)} rows; {adds:+.2f} over the {len(additive)} additive vectors"
    )
    print(
        f"board's top vector: {top} (VADER {outside[top][0]:+.3f}); VADER's best: {best} "
        f"({outside[best][0]:+.3f} [{outside[best][1]:+.3f}, {outside[best][2]:+.3f}]): "
        f"the top vector is {'within' if inside else 'outside'} VADER's interval of its best"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
