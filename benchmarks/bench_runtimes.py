"""`isokl check` in llama.cpp against the same check in transformers: one calibrated vector, 12 prompts x 20 tokens.

    .venv/bin/python benchmarks/bench_runtimes.py [--threads 2] [--models smollm2-135m,...] [--reps 3]

Per model: the seed-0 sentiment mean_diff vector calibrated in transformers float32 (4 prompts, T = 20), then
`isokl.check` of it on the first 12 held-out generic prompts, T = 20, in transformers float32 and in llama.cpp on the
model's GGUF file (opening the file, exporting the control vector and reading it back included; the transformers
model's load is not, as `isokl check` prints it). The two alternate, `--reps` times each; the median of each and
their ratio are printed with the CPU. Nothing else may run meanwhile (two processes on 2 cores slow each other).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_quick_study import cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import isokl
    from isokl.core.calibrate import calibrate_iso_kl
    from isokl.core.formats.concept import DEFAULT, Concept
    from isokl.core.model.models import set_threads
    from isokl.core.runtimes.ggml import binding, version

    binding()
    set_threads(args.threads)
    concept = Concept.load(DEFAULT)
    held = concept.heldout(12)
    print(f"isokl.check, 12 prompts x 20 tokens ({args.threads} threads, {cpu()}, {version()}, median of {args.reps}):")
    for model in args.models.split(","):
        lm = isokl.load(model)
        res = calibrate_iso_kl(lm, isokl.extract(lm, concept.pairs(0), "mean_diff"), concept.calibration(0, 4), progress=False)
        times: dict[str, list[float]] = {"transformers": [], "llama.cpp": []}
        p95 = {}
        for _ in range(args.reps):
            for runtime in times:
                t = time.perf_counter()
                p95[runtime] = isokl.check(lm, res.vector, held, 20, runtime=runtime).p95
                times[runtime].append(time.perf_counter() - t)
        tf, ll = (statistics.median(times[k]) for k in ("transformers", "llama.cpp"))
        print(
            f"  {model:<20} transformers float32 {tf:6.2f} s (p95 {p95['transformers']:.3f}), llama.cpp {ll:6.2f} s "
            f"(p95 {p95['llama.cpp']:.3f}); llama.cpp / transformers = {ll / tf:.2f}"
        )


if __name__ == "__main__":
    main()
