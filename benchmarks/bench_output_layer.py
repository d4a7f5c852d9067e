"""The CPU output-layer product ((W @ x^T)^T for 2-16 rows) against nn.Linear, inside real evaluations.

    .venv/bin/python benchmarks/bench_output_layer.py [models ...]

Per bundled model: one calibration evaluation (mean_diff seed 0, N = 4 prompts, T = 20,
8 rows with the base twins) timed 3 times with the model's own nn.Linear output layer and
3 times with the column product, interleaved; prints the medians and their ratio.
"""

import statistics
import sys
import time

import torch

from isokl import load
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.methods import get_method
from isokl.core.model import prompts
from isokl.core.runtimes import rollout as R


def main(models: list[str]):
    torch.set_num_threads(2)
    for model in models:
        lm = load(model)
        vec = extract(lm, concept.extraction_pairs(0), "mean_diff")
        seqs = lm.encode([lm.format(p) for p in prompts.calibration_prompts(0)])
        c = get_method("mean_diff").initial_coeff(vec)
        head = lm.model.get_output_embeddings()
        column = head.forward  # installed by isokl.load
        base = R.prefill_base(lm, seqs)
        times = {"linear": [], "column": []}
        for _ in range(3):
            for tag in times:
                if tag == "linear":
                    del head.forward  # back to nn.Linear.forward
                else:
                    head.forward = column
                t0 = time.perf_counter()
                R.evaluate(lm, seqs, vec, (c,), 20, base=base)
                times[tag].append(time.perf_counter() - t0)
        a, b = statistics.median(times["linear"]), statistics.median(times["column"])
        print(
            f"{model}: one calibration evaluation (N = 4, T = 20, 8 rows): nn.Linear {a:.2f} s, column product {b:.2f} s "
            f"(medians of 3) = {a / b:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
