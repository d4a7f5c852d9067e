"""How close is a cheap first guess to c*? The off-policy crossing vs the solver's current guess (issue 12 lead).

    .venv/bin/python benchmarks/bench_first_guess.py [--model smollm2-135m] [--window 20]

Off-policy statistic: the steered model teacher-forced on the *base* model's greedy rollout
of the calibration prompts (one forward per batch of coefficients, no decoding, so p95(c)
is smooth); its crossing of 1 nat is found on a grid of c. For each (method, seed) cell of
the published study (results/calibration.csv, same model, same 4 prompts, same window) it
prints c* / c_offpolicy beside c* / (the solver's current first guess), and the seconds
the off-policy search took (to compare with one on-policy evaluation).
"""

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from isokl import load
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.methods import get_method
from isokl.core.model import prompts
from isokl.core.model.hooks import steer
from isokl.core.model.models import forward, left_pad, pad_id
from isokl.core.runtimes.rollout import rollout
from isokl.core.stats.statistic import P95


@torch.no_grad()
def offpolicy_p95(lm, seqs, vector, coeffs, T):
    """p95 of KL(steered || base) on the base model's own greedy rollout, for each c in coeffs."""
    base = rollout(lm, seqs, T, None, (0.0,))
    full = [s + base.tokens[i][base.valid[i]].tolist() for i, s in enumerate(seqs)]
    ids, mask, pos = left_pad(full, pad_id(lm), lm.device)
    # position j predicts token j + 1: the generated tokens are predicted from the T positions before the last
    keep = T + 1
    lq = torch.log_softmax(forward(lm.model, ids, mask, pos, keep=keep)[:, :-1].double(), -1)
    steps = base.valid.sum(1)  # each row's generated tokens, right-aligned in the padded batch
    valid = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, n in enumerate(steps.tolist()):
        valid[i, T - n :] = True
    out = []
    for c in coeffs:
        with steer(lm.model, vector, c):
            lp = torch.log_softmax(forward(lm.model, ids, mask, pos, keep=keep)[:, :-1].double(), -1)
        kl = (lp.exp() * (lp - lq)).sum(-1)  # [n T]
        out.append(P95.pooled(kl[valid].numpy()))
    return out


def crossing(cs, ps, target=1.0):
    xs, ys = np.log(cs), np.log(np.maximum(ps, 1e-12) / target)
    for j in range(1, len(xs)):
        if ys[j - 1] < 0 <= ys[j]:
            return float(np.exp(xs[j - 1] - ys[j - 1] * (xs[j] - xs[j - 1]) / (ys[j] - ys[j - 1])))
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm = load(a.model)
    with open(Path(__file__).resolve().parents[1] / "results" / "v1" / "calibration.csv", newline="") as f:
        cells = [r for r in csv.DictReader(f) if r["model"] == a.model and int(r["window"]) == a.window]
    print(f"{a.model} T = {a.window}, {a.threads} threads: c* (published) vs guesses")
    ratios_off, ratios_now = [], []
    for r in cells:
        seed, method, c_star = int(r["seed"]), r["method"], float(r["c_star"])
        vec = extract(lm, concept.extraction_pairs(seed), method)
        seqs = lm.encode([lm.format(p) for p in prompts.calibration_prompts(seed)])
        guess = get_method(method).initial_coeff(vec)
        t0 = time.perf_counter()
        grid = guess * np.exp(np.linspace(np.log(0.2), np.log(5.0), 17))
        c_off = crossing(grid, offpolicy_p95(lm, seqs, vec, grid, a.window))
        secs = time.perf_counter() - t0
        ratios_off.append(c_star / c_off)
        ratios_now.append(c_star / guess)
        print(
            f"{method:22s} s{seed}: c* = {c_star:.4g}  c*/c_off = {c_star / c_off:.3f}  c*/guess = {c_star / guess:.3f}  "
            f"(off-policy search {secs:.1f} s, 17 doses)",
            flush=True,
        )
    for name, rs in (("off-policy", ratios_off), ("current guess", ratios_now)):
        rs = np.array(rs)
        print(
            f"{name}: c*/guess median {np.nanmedian(rs):.3f}, range {np.nanmin(rs):.3f}-{np.nanmax(rs):.3f}, "
            f"spread (max/min) {np.nanmax(rs) / np.nanmin(rs):.2f}x"
        )


if __name__ == "__main__":
    main()
