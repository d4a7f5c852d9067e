"""The judge's cost against calibration's: the README's 9-vector refusal grid plus its 3 controls on smollm2-135m.

    .venv/bin/python benchmarks/bench_judge.py [--threads 2] [--pmass] [--alone]

Calibrates the grid (3 methods x 3 layer bands, 16 calibration prompts, T = 20) and its 3 random-direction controls
jointly (`calibrate_many`, as `isokl calibrate` does), then judges the 12 vectors on the concept's 24 held-out
prompts x 30 tokens in one batch (`study.judge.judge`). Prints both times, their ratio (target <= 1), the peak RSS
after each phase and the CPU. --pmass adds a judge with branch_pmass (16 true/false questions) and its ratio;
--alone judges the vectors one at a time too (the batch's gain). Nothing else should run meanwhile.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick_study import cpu


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", default="examples/concepts/refusal")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pmass", action="store_true")
    ap.add_argument("--alone", action="store_true")
    args = ap.parse_args()
    import isokl
    from isokl.core.model.hooks import default_layers
    from isokl.core.model.models import set_threads
    from isokl.study import judge as J

    set_threads(args.threads)
    lm = isokl.load("smollm2-135m")
    concept = isokl.Concept.load(args.concept)
    pairs = concept.pairs(0)
    bands = [default_layers(lm.n_layers, b) for b in ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8))]
    vecs = [isokl.extract(lm, pairs, m, layers=ls) for m in ("mean_diff", "pca", "directional_ablation") for ls in bands]
    ctrl = J.control_vectors(lm, vecs, pairs, seed=0)
    print(f"smollm2-135m, {args.concept}: {len(vecs)} vectors + {len(ctrl)} controls; {args.threads} threads, {cpu()}")
    rss0 = rss_mb()
    t0 = time.time()
    joint = isokl.calibrate(lm, [*vecs, *ctrl.values()], concept.calibration(0, 16), T=20, progress=False)
    cal = time.time() - t0
    rss_cal = rss_mb()
    results, controls = joint.results[: len(vecs)], dict(zip(ctrl, joint.results[len(vecs) :], strict=True))
    t1 = time.time()
    judged = J.judge(lm, results, concept, controls=controls, seed=0)
    jud = time.time() - t1
    n = judged.settings["n_heldout"]["heldout_generic"]
    print(f"calibrate (12 vectors, 16 prompts, T = 20, {len(joint.rounds)} rounds): {cal:.1f} s, peak RSS {rss_cal:.0f} MB")
    print(
        f"judge (12 vectors, {n} held-out prompts x {judged.settings['horizon']} tokens, one batch): {jud:.1f} s, peak RSS {rss_mb():.0f} MB"
    )
    print(f"judge / calibrate = {jud / cal:.2f} (target <= 1); RSS before calibrating {rss0:.0f} MB")
    if args.alone:
        t2 = time.time()
        for r in [*results, *controls.values()]:
            J.judge(lm, [r], concept, seed=0)
        alone = time.time() - t2
        print(f"judge one vector at a time: {alone:.1f} s; batch / one at a time = {jud / alone:.2f}")
    if args.pmass:
        t3 = time.time()
        J.judge(lm, results, concept, controls=controls, seed=0, pmass=True)
        pm = time.time() - t3
        print(
            f"judge with --pmass (16 questions, forks 0..30): {pm:.1f} s; / calibrate = {pm / cal:.2f}; / judge = {pm / jud:.2f}"
        )


if __name__ == "__main__":
    main()
