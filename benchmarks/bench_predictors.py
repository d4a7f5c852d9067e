"""How close does each predictor of c* come, on the Study v2 protocol's 54 calibrations (issue 40)?

    .venv/bin/python benchmarks/bench_predictors.py --out runs/predictors [--models ...] [--threads 2]

The 54: 3 bundled models x mean_diff, pca, directional_ablation x seeds 0-2 x windows 20 and 50, each on its seed's
4 calibration prompts of the sentiment concept, target 1 nat, tol 0.05, float32 (docs/decisions.md, "Study v2
protocol"). For each, c* is what `calibrate_iso_kl` returns (the solver of this commit), and each predictor's guess is
compared with it as c_guess / c*. A guess within about 2.5% of c* is one the next rollout confirms (p95 within 5% at a
log-log slope near 2).

Predictors, all computed from what the calibration had or could have had before its second rollout:

- `first guess`: the method's guess from activation scales (`Method.initial_coeff`): the first dose today.
- `slope 2`: today's second dose, c0 p0^(-1/2) from the first rollout's p95 p0 at c0.
- `own text`: the steered model teacher-forced on the first rollout's own text, its off-policy p95 solved exactly
  for the target (smooth in c: no token flips). It equals the on-policy p95 at c0 itself (same text).
- `own slope`: the same text at one more dose (the slope-2 dose): the log-log secant through (c0, p0) and it.
- `base text`: teacher-forced on the base model's greedy rollout, solved for the target (needs no steered rollout).
- `base text x ratio`: the same curve scaled by the first rollout's on/off-policy ratio at c0.
- `neighbour`: the T = 20 c* of the same vector (a vector already calibrated on this model), for the T = 50 ones.

Writes OUT/predictors.csv (one row per calibration and predictor) and prints the table that docs/calibration.md
shows: per predictor the median |log(c_guess/c*)|, the share within 2.5% and 10% of c*, the 5th-95th percentile
ratio, and the seconds its extra forwards took beside one on-policy evaluation (the CPU named).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name

from isokl import load
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats.concept import DEFAULT, Concept
from isokl.core.methods import get_method
from isokl.core.runtimes.offpolicy import TextCurve
from isokl.core.runtimes.rollout import rollout

MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")
METHODS = ("mean_diff", "pca", "directional_ablation")
WINDOWS = (20, 50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    concept = Concept.load(DEFAULT)
    rows: list[dict] = []
    path = args.out / "predictors.csv"
    for model_id in args.models:
        lm = load(model_id)
        for seed in args.seeds:
            cal = concept.calibration(seed, 4)
            seqs = lm.encode([lm.format(p) for p in cal])
            base = rollout(lm, seqs, max(WINDOWS), None, (0.0,))  # greedy: its first 20 tokens are the T = 20 rollout
            for method in args.methods:
                vec = extract(lm, concept.pairs(seed), method)
                c20 = None
                for T in WINDOWS:
                    rows += one(lm, seqs, vec, cal, T, base, c20, (model_id, method, seed))
                    c20 = rows[-1]["c_star"]
                    write(path, rows)
                    print(f"{model_id} {method} seed {seed} T = {T}: done", flush=True)
        del lm
    table(rows)


def one(lm, seqs, vec, cal, T, base, c20, key) -> list[dict]:
    model_id, method, seed = key
    res = calibrate_iso_kl(lm, vec, cal, T=T, progress=False)
    c_star = res.c_star
    c0 = get_method(vec.method).initial_coeff(vec)
    t0 = time.perf_counter()
    first = rollout(lm, seqs, T, vec, (c0,))
    t_eval = time.perf_counter() - t0
    p0 = first.stats(0).p95
    guesses: dict[str, tuple[float, float]] = {"first guess": (c0, 0.0), "slope 2": (c0 * p0**-0.5, 0.0)}
    t0 = time.perf_counter()
    own = TextCurve(lm, seqs, vec, first.tokens, first.valid)
    guesses["own text"] = (own.solve(c0, p0), time.perf_counter() - t0)
    t0 = time.perf_counter()
    own2 = TextCurve(lm, seqs, vec, first.tokens, first.valid)  # its own base forward: timed as used alone
    c1 = c0 * p0**-0.5
    g1 = own2.p95(c1)
    s = math.log(g1 / p0) / math.log(c1 / c0) if g1 > 0 and p0 > 0 else 2.0
    guesses["own slope"] = (c0 * p0 ** (-1 / max(s, 0.25)), time.perf_counter() - t0)
    t0 = time.perf_counter()
    tok, val = base.tokens[:, :T], base.valid[:, :T]
    on_base = TextCurve(lm, seqs, vec, tok, val)
    guesses["base text"] = (on_base.solve(c0), time.perf_counter() - t0)
    ratio = p0 / max(on_base.p95(c0), 1e-12)
    t1 = time.perf_counter()
    c_ratio = on_base.solve(c0, scale=ratio)
    # the same curve's forwards (p95 at c0 is cached): its cost is the base text's plus this solve's own
    guesses["base text x ratio"] = (c_ratio, guesses["base text"][1] + time.perf_counter() - t1)
    if c20 is not None:
        guesses["neighbour"] = (c20, 0.0)
    return [
        {
            "model": model_id,
            "method": method,
            "seed": seed,
            "window": T,
            "predictor": name,
            "c_guess": g,
            "c_star": c_star,
            "ratio": g / c_star,
            "status": res.status,
            "evaluations": res.evaluations,
            "p0": p0,
            "seconds": secs,
            "eval_seconds": t_eval,
        }
        for name, (g, secs) in guesses.items()
    ]


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def table(rows: list[dict]) -> None:
    names = list(dict.fromkeys(r["predictor"] for r in rows))
    print(f"\n{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    ok = [r for r in rows if r["predictor"] == "first guess"]
    ev = sorted(r["evaluations"] for r in ok)
    print(f"{len(ok)} calibrations; evaluations today: median {float(np.median(ev)):g}, max {max(ev)}")
    print("| predictor | n | median abs log error | within 2.5% | within 10% | 5th-95th pct of c_guess/c* | extra s / eval s |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for name in names:
        rs = [r for r in rows if r["predictor"] == name and math.isfinite(r["ratio"])]
        err = np.abs(np.log([r["ratio"] for r in rs]))
        q = np.quantile([r["ratio"] for r in rs], [0.05, 0.95])
        cost = sum(r["seconds"] for r in rs) / sum(r["eval_seconds"] for r in rs)
        print(
            f"| {name} | {len(rs)} | {np.median(err):.3f} | {np.mean(err <= math.log(1.025)):.0%} | "
            f"{np.mean(err <= math.log(1.10)):.0%} | {q[0]:.3f}-{q[1]:.3f} | {cost:.2f} |"
        )


if __name__ == "__main__":
    main()
