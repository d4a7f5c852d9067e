"""Peak memory of one calibration evaluation (rollout + base twins + per-token KL) on each bundled model.

    .venv/bin/python benchmarks/bench_memory.py [--models smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b]

Each measurement runs in a fresh process: peak resident memory during the evaluation
minus the resident memory after loading the model. KL is reduced at every generated
token, so the [N, T, vocab] logits are never held; the last column shows what holding
them in float32 would cost, for comparison.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time, torch
torch.set_num_threads(2)
from isokl import load
from isokl.core.formats import concept
from isokl.core.model import prompts
from isokl.core.extract import extract
from isokl.core.runtimes.rollout import evaluate
model, N, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lm = load(model)
vec = extract(lm, concept.extraction_pairs(0), "mean_diff")
pool = prompts.pool("calibration") + prompts.pool("heldout_generic")
seqs = lm.encode([lm.format(p) for p in pool[:N]])
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
evaluate(lm, seqs[:2], vec, (1.0,), 2)  # warm-up allocations
before, peak, running = rss(), [0], [True]
def poll():  # sample resident memory every 2 ms during the evaluation
    while running[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
th = threading.Thread(target=poll); th.start()
evaluate(lm, seqs, vec, (0.3 * vec.diff_norm,), T)
running[0] = False; th.join()
V = lm.model.config.get_text_config().vocab_size
print(json.dumps(dict(model=model, N=N, T=T, vocab=V, after_load_mib=before / 2**20, process_peak_mib=peak[0] / 2**20,
                      full_logits_mib=N * T * V * 4 / 2**20)))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b")
    ap.add_argument("--sizes", default="4x20,16x50", help="NxT pairs")
    args = ap.parse_args()
    rows = []
    for m in args.models.split(","):
        for size in args.sizes.split(","):
            N, T = size.split("x")
            r = subprocess.run([sys.executable, "-c", CHILD, m, N, T], capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'model':22s} {'N':>3} {'T':>3} {'vocab':>7} | {'process peak MiB':>16} {'peak - loaded MiB':>17} | {'[N,T,V] fp32 logits MiB':>23}"
    )
    for r in rows:
        print(
            f"{r['model']:22s} {r['N']:>3} {r['T']:>3} {r['vocab']:>7} | {r['process_peak_mib']:16.0f} "
            f"{r['process_peak_mib'] - r['after_load_mib']:17.0f} | {r['full_logits_mib']:23.0f}"
        )


if __name__ == "__main__":
    main()
