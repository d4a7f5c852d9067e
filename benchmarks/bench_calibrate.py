"""Benchmark: isokl's calibration vs the simple reference path, side by side in one run.

    .venv/bin/python benchmarks/bench_calibrate.py [--model smollm2-135m] [--windows 20 50]

Same model, vector (mean_diff, seed 0), 4 calibration prompts, target 1 nat, tol 0.05.
Reference = one prompt at a time, `generate` + two full forwards per prompt per solver
step, plain bisection on log c (isokl.core.reference), started at c = 1 (the conventional unit
coefficient; --ref-start) and, with --ref-from-guess, also at isokl's own first guess, which
isolates the per-evaluation and solver gains from the first-guess gain. Prints wall times,
the ratios, the evaluation counts, and calibration time over one batched evaluation.
isokl also runs without drafts (each solver step's rollout decoded step by step instead of
verifying the nearest evaluated dose's tokens): same c*, the difference is the drafts' gain.

    .venv/bin/python benchmarks/bench_calibrate.py --joint [--windows 20 50] [--n-prompts 4 16]

--joint: joint calibration (`calibrate_many`, one batch per solver round) against the same vectors
calibrated one after another with the single-vector solver (model loaded once, side by side in one
run). Cases: 9 vectors (mean_diff, pca, directional_ablation x layer bands 0.2-0.4, 0.4-0.6, 0.6-0.8
of depth), and the study's group (its 3 methods at the default band + the random_direction control;
the study's calibration phase before = sequential, after = joint) and its 3 methods alone. Prints the
machine's row-cost curve (one full evaluation of k doses, no early stop), both times, their ratio,
the ratio the curve predicts for the rounds actually run (joint batches' costs over the sequential
evaluations' costs, from the curve, without the drafts' and early stops' savings on either side), the
doses of each batch (d: fed from drafts) and evaluations per vector.
"""

import argparse
import time

import torch

from isokl import load
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.model import prompts
from isokl.core.reference import reference_calibrate
from isokl.core.runtimes.rollout import evaluate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="mean_diff")
    ap.add_argument("--windows", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ref-start", type=float, default=1.0, help="the reference's first coefficient")
    ap.add_argument("--ref-from-guess", action="store_true", help="also run the reference from isokl's first guess")
    ap.add_argument(
        "--bf16", action="store_true", help="also calibrate the same vector on the model in bfloat16 (c* and time beside float32)"
    )
    ap.add_argument(
        "--per-round",
        action="store_true",
        help="also time one evaluation of 1, 2 and 4 doses, and calibrations with 1, 2 and 4 doses per solver round",
    )
    ap.add_argument("--joint", action="store_true", help="joint vs sequential calibration of several vectors (see above)")
    ap.add_argument("--n-prompts", type=int, nargs="+", default=[4, 16], help="--joint: calibration prompt counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.joint:
        return joint(args)
    lm = load(args.model)
    lm16 = load(args.model, dtype=torch.bfloat16) if args.bf16 else None
    vec = extract(lm, concept.extraction_pairs(0), args.method)
    cal = prompts.calibration_prompts(0)
    seqs = lm.encode([lm.format(p) for p in cal])
    rows = []
    if args.per_round:
        evaluate(lm, seqs, vec, (1.0,), args.windows[0])  # warm-up
        for k in (1, 2, 4):
            t0 = time.perf_counter()
            evaluate(lm, seqs, vec, tuple(1.0 + 0.1 * i for i in range(k)), args.windows[0])
            print(f"one evaluation of {k} doses (T = {args.windows[0]}): {time.perf_counter() - t0:.2f} s")
        for T in args.windows:
            for k in (1, 2, 4):
                t0 = time.perf_counter()
                r = calibrate_iso_kl(lm, vec, cal, T=T, per_round=k, progress=False)
                print(f"T = {T}, {k} doses per round: {time.perf_counter() - t0:.2f} s, {r.evaluations} doses, {r.status}")
    for T in args.windows:
        t0 = time.perf_counter()
        fast = calibrate_iso_kl(lm, vec, cal, T=T)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = calibrate_iso_kl(lm, vec, cal, T=T, draft=False)
        t_plain = time.perf_counter() - t0
        assert abs(plain.c_star / fast.c_star - 1) < 1e-4, (plain.c_star, fast.c_star)  # drafts change the cost, not the result
        if lm16 is not None:
            t0 = time.perf_counter()
            half = calibrate_iso_kl(lm16, vec, cal, T=T, progress=False)
            t_half = time.perf_counter() - t0
            print(
                f"T = {T}: bfloat16 model: c* = {half.c_star:.4g} ({half.status}, {half.evaluations} evals, "
                f"{t_half:.1f} s) vs float32 c* = {fast.c_star:.4g} ({fast.evaluations} evals, "
                f"{t_fast:.1f} s): c* ratio {half.c_star / fast.c_star:.3f}, speed-up {t_fast / t_half:.2f}x"
            )
        t0 = time.perf_counter()
        evaluate(lm, seqs, vec, (fast.c_star,), T)
        t_one = time.perf_counter() - t0
        starts = [(f"c={args.ref_start:g}", args.ref_start)] + ([("isokl guess", None)] if args.ref_from_guess else [])
        for label, c0 in starts:
            t0 = time.perf_counter()
            c_ref, p_ref, n_ref = reference_calibrate(lm, vec, seqs, T, progress=True, c0=c0)
            t_ref = time.perf_counter() - t0
            rows.append((T, label, t_fast, fast.evaluations, fast.c_star, fast.p95, t_ref, n_ref, c_ref, p_ref, t_one, t_plain))
    print(
        f"\nmodel {args.model}, method {args.method}, N = {len(cal)} prompts, {args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"{'T':>3} | {'isokl s':>8} {'evals':>5} {'c*':>8} {'p95':>6} {'no drafts s':>11} | {'ref start':>11} {'ref s':>8} {'evals':>5} {'c':>8} {'p95':>6} | {'speedup':>7} | {'calib/eval':>10}"
    )
    for T, lab, tf, nf, cf, pf, tr, nr, cr, pr, t1, tp in rows:
        print(
            f"{T:>3} | {tf:8.1f} {nf:5d} {cf:8.4g} {pf:6.3f} {tp:11.1f} | {lab:>11} {tr:8.1f} {nr:5d} {cr:8.4g} {pr:6.3f} | {tr / tf:6.1f}x | {tf / t1:9.2f}x"
        )
    for T, lab, tf, _nf, _cf, _pf, tr, _nr, _cr, _pr, t1, tp in rows:
        print(
            f"T={T}: speedup {tr / tf:.1f}x over the reference started at {lab} ({tr / tp:.1f}x without drafts); "
            f"calibration = {tf / t1:.2f}x one batched evaluation ({t1:.1f} s)"
        )


def joint(args) -> None:
    import numpy as np

    from isokl.core.calibrate import calibrate_many
    from isokl.core.model.hooks import default_layers

    lm = load(args.model)
    pairs = concept.extraction_pairs(0)
    bands = ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8))
    study = ("mean_diff", "pca", "directional_ablation")
    grid = [extract(lm, pairs, m, layers=default_layers(lm.n_layers, b)) for m in study for b in bands]
    group = [extract(lm, pairs, m) for m in study] + [extract(lm, pairs, "random_direction", seed=0)]
    cases = [("9 vectors (3 methods x 3 bands)", grid), ("study group (3 methods + control)", group), ("3 methods", group[:3])]
    ks = (1, 2, 3, 5, 9)
    lines = []
    for n in args.n_prompts:
        cal = prompts.calibration_prompts(0, k=n)
        seqs = lm.encode([lm.format(p) for p in cal])
        for T in args.windows:
            evaluate(lm, seqs, grid[0], (5.0,), T)  # warm-up
            curve = {}
            for k in ks:
                t0 = time.perf_counter()
                evaluate(lm, seqs, grid[0], tuple(5.0 * (1 + 0.01 * i) for i in range(k)), T)
                curve[k] = time.perf_counter() - t0
            cost = lambda k: float(np.interp(k, ks, [curve[x] for x in ks]))
            print(f"N = {n}, T = {T}: one evaluation of k doses: " + ", ".join(f"{k}: {curve[k]:.2f} s" for k in ks), flush=True)
            for name, vecs in cases:
                t0 = time.perf_counter()
                single = [calibrate_iso_kl(lm, v, cal, T=T, progress=False) for v in vecs]
                t_seq = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = calibrate_many(lm, vecs, cal, T=T, progress=False)
                t_joint = time.perf_counter() - t0
                predicted = sum(cost(r.doses) for r in res.rounds) / sum(cost(1) * s.evaluations for s in single)
                same = all(a.status == b.status for a, b in zip(res.results, single, strict=True))
                drift = max(abs(a.c_star / b.c_star - 1) for a, b in zip(res.results, single, strict=True))
                lines.append(
                    f"| {name} | {n} | {T} | {t_seq:.1f} | {t_joint:.1f} | {t_joint / t_seq:.2f} | {predicted:.2f} | "
                    f"{' '.join(str(r.doses) + ('d' if r.drafted else '') for r in res.rounds)} | {' '.join(str(r.evaluations) for r in res.results)} | "
                    f"{' '.join(str(s.evaluations) for s in single)} | {'yes' if same else 'NO'}, {drift:.1e} |"
                )
                print(lines[-1], flush=True)
    print(f"\nmodel {args.model}, {args.threads} threads, torch {torch.__version__}; times in seconds")
    print(
        "| vectors | N | T | sequential | joint | ratio | curve predicts | doses per round | evaluations (joint) | "
        "evaluations (single) | same status, max c* drift |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
