"""Several vectors' held-out rollouts in one batch (`rollout_many`, as a sweep group's) against one vector at a time.

    .venv/bin/python benchmarks/bench_held_out.py [--threads 2]

smollm2-135m, the refusal pairs' mean_diff, pca and directional_ablation at the quick study's c* of seed 0, the quick
protocol's doses 0.5, 1, 1.5, 2 x c*, 24 held-out prompts x 30 tokens, with base twins. Prints both times and the CPU.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick_study import cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import isokl
    from isokl.core.model.models import set_threads
    from isokl.core.runtimes.rollout import rollout, rollout_many

    set_threads(args.threads)
    lm = isokl.load("smollm2-135m")
    c = isokl.Concept.load("examples/concepts/refusal")
    vecs = [isokl.extract(lm, c.pairs(0), m) for m in ("mean_diff", "pca", "directional_ablation")]
    stars = [3.587, 4.343, 0.1003]  # results/refusal's seed-0 c*
    seqs = lm.encode([lm.format(p) for p in c.heldout(24)])

    def doses(x):
        return tuple(a * x for a in (0.5, 1, 1.5, 2))

    t = time.time()
    for v, x in zip(vecs, stars, strict=True):
        rollout(lm, seqs, 30, v, doses(x))
    sep = time.time() - t
    t = time.time()
    rollout_many(lm, seqs, 30, vecs, [doses(x) for x in stars])
    joint = time.time() - t
    print(f"3 vectors x 4 doses x 24 prompts x 30 tokens ({args.threads} threads, {cpu()}):")
    print(f"one at a time {sep:.1f} s, one batch {joint:.1f} s, batch / one at a time = {joint / sep:.2f}")


if __name__ == "__main__":
    main()
