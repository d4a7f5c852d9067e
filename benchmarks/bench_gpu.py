"""GPU scaling benchmark on random-initialised models of real architectures (no download).

    python benchmarks/bench_gpu.py --out docs/bench/gpu.md          # on a CUDA machine
    python benchmarks/bench_gpu.py --smoke                           # tiny shapes on CPU, checks the script
    python benchmarks/bench_gpu.py --joint --out docs/bench/gpu-joint.md   # joint vs one-by-one calibration only

Shapes: Qwen2.5-0.5B, 1.5B and 7B configs (written out below), bfloat16, random
weights, prompts of 48 random tokens, rollouts forced to exactly T tokens (no EOS).
For each (shape, N, T): seconds and peak GPU memory of one batched evaluation (steered
rollout with base twins, per-token KL) and, where affordable, of the one-prompt-at-a-time
reference evaluation (`generate` + two full forwards per prompt). Then full calibrations
of the 7B shape at N = 4, T = 50 with 1 and with 4 doses per solver round. A random model
has no concept direction, so the vector is a random unit direction; calibration still
has a well-defined p95(c) curve to solve.

--joint (issue 22): on the 7B shape only (the smoke shape with --smoke), 9 random vectors (additive
and ablation rules, 3 layer bands of depth) calibrated one after another with `calibrate_iso_kl` and
together with `calibrate_many`, N = 4 and 16, T = 50: seconds, the ratio, rounds and evaluations; the
goal is 9 vectors in the time of 2 single calibrations.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from isokl.core.calibrate import solve
from isokl.core.formats.vector import Vector
from isokl.core.model.hooks import default_layers
from isokl.core.model.models import LM
from isokl.core.reference import reference_kl
from isokl.core.runtimes.rollout import evaluate

SHAPES = {  # Qwen2.5 configs: hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 151936, True),
    "qwen2.5-1.5b": (1536, 8960, 28, 12, 2, 151936, True),
    "qwen2.5-7b": (3584, 18944, 28, 28, 4, 152064, False),
    "smoke": (64, 128, 4, 4, 2, 512, True),
}


class _Tok:
    """Token ids written out as text ("101 7 4096"), so that prompts of random ids go through `LM.encode`."""

    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [int(x) for x in text.split()]}


def build(shape: str, device: str, dtype: torch.dtype) -> LM:
    from transformers import AutoModelForCausalLM, Qwen2Config

    h, i, n, a, kv, vocab, tied = SHAPES[shape]
    cfg = Qwen2Config(
        hidden_size=h,
        intermediate_size=i,
        num_hidden_layers=n,
        num_attention_heads=a,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    # Random init gives near-uniform next-token distributions whose KL saturates far below 1 nat;
    # scale the output head so logits have a standard deviation of about 5, like a trained model's.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(5.0 / (model.config.initializer_range * h**0.5))
    return LM(id=shape, model=model, tokenizer=_Tok(), chat=False, eos_ids=(), max_positions=4096)


def random_vector(lm: LM) -> Vector:
    layers = default_layers(lm.n_layers)
    g = torch.Generator().manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(len(layers), lm.d_model, generator=g), dim=-1)
    return Vector("mean_diff", layers, d, lm.id, resid_norm=1.0, diff_norm=1.0, proj_mean=1.0)


def grid_vectors(lm: LM) -> list[Vector]:
    """9 random unit directions: 3 rules (additive, additive, ablation) x 3 bands of depth."""
    out = []
    for i, method in enumerate(("mean_diff", "pca", "directional_ablation")):
        for j, band in enumerate(((0.2, 0.4), (0.4, 0.6), (0.6, 0.8))):
            layers = default_layers(lm.n_layers, band)
            g = torch.Generator().manual_seed(10 + 3 * i + j)
            d = torch.nn.functional.normalize(torch.randn(len(layers), lm.d_model, generator=g), dim=-1)
            out.append(Vector(method, layers, d, lm.id, resid_norm=1.0, diff_norm=1.0, proj_mean=1.0))
    return out


def joint_rows(lm: LM, seqs_all: list[list[int]], device: str, Ns: list[int], T: int) -> list[dict]:
    from isokl.core.calibrate import calibrate_iso_kl, calibrate_many
    from isokl.core.model.prompts import Prompt

    vecs = grid_vectors(lm)
    rows = []
    for N in Ns:
        prompts = [Prompt(user="", text=" ".join(map(str, s)), id=f"r{i}") for i, s in enumerate(seqs_all[:N])]
        single, t_s, _ = timed(lambda: [calibrate_iso_kl(lm, v, prompts, T=T, progress=False) for v in vecs], device)
        joint, t_j, m_j = timed(lambda: calibrate_many(lm, vecs, prompts, T=T, progress=False), device)
        one = sum(r.seconds for r in single) / len(single)
        rows.append(
            dict(
                N=N,
                T=T,
                sequential_s=t_s,
                joint_s=t_j,
                ratio=t_j / t_s,
                joint_in_singles=t_j / one,
                gib=m_j,
                rounds=" ".join(str(r.doses) for r in joint.rounds),
                evaluations=" ".join(str(r.evaluations) for r in joint.results),
                statuses=" ".join(sorted({r.status for r in joint.results})),
                same_status=all(a.status == b.status for a, b in zip(joint.results, single, strict=True)),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report(lines: list[str], out: str | None) -> None:
    """Print the markdown and write it to --out when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


def timed(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return out, time.perf_counter() - t0, mem


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="markdown file for the table (default: print only)")
    ap.add_argument("--smoke", action="store_true", help="tiny shape on CPU: checks the script runs")
    ap.add_argument("--ns", default=None, help="comma-separated N to time (default 4,16,64)")
    ap.add_argument("--joint", action="store_true", help="only the joint calibration of 9 vectors against one by one")
    ap.add_argument(
        "--warm",
        action="store_true",
        help="before timing a shape, run its largest evaluation once (N = 64, T = 200, 4 doses) so that "
        "the allocator holds enough memory and every kernel has run; without it, the first rows of a "
        "shape include those one-time costs",
    )
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    shapes = ["smoke"] if args.smoke else ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"]
    Ns, Ts = ([4, 16], [20, 50]) if args.smoke else ([4, 16, 64], [20, 50, 200])
    if args.ns:
        Ns = [int(x) for x in args.ns.split(",")]
    rows, calib = [], []
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    if args.joint:
        return joint_main(args, device, dtype, gpu)
    for shape in shapes:
        lm = build(shape, device, dtype)
        vec = random_vector(lm)
        g = torch.Generator().manual_seed(2)
        vocab = SHAPES[shape][5]
        seqs_all = torch.randint(100, vocab - 100, (64, 48), generator=g).tolist()
        evaluate(lm, seqs_all[:4], vec, (1.0,), 4)  # warm-up (kernels)
        if args.warm:
            evaluate(lm, seqs_all[:64], vec, (0.5, 1.0, 2.0, 4.0), max(Ts))
            evaluate(lm, seqs_all[:4], vec, (1.0,), max(Ts))
            reference_kl(lm, seqs_all[:1], vec, 1.0, max(Ts))
        for N in Ns:
            for T in Ts:
                seqs = seqs_all[:N]
                (_, t_b, m_b) = timed(lambda: evaluate(lm, seqs, vec, (1.0,), T), device)
                (_, t_b4, m_b4) = timed(lambda: evaluate(lm, seqs, vec, (0.5, 1.0, 2.0, 4.0), T), device)
                t_r = m_r = float("nan")
                if N * T <= 16 * 50:  # the reference is one prompt at a time: only where it fits the time budget
                    (_, t_r, m_r) = timed(lambda: reference_kl(lm, seqs, vec, 1.0, T), device)
                row = dict(
                    shape=shape,
                    N=N,
                    T=T,
                    batched_s=t_b,
                    batched_gib=m_b,
                    four_doses_s=t_b4,
                    four_doses_gib=m_b4,
                    reference_s=t_r,
                    reference_gib=m_r,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
        if shape in ("qwen2.5-7b", "smoke"):
            seqs = seqs_all[:4]
            for k in (1, 4):
                rounds = []

                def f(cs, T=50):
                    rounds.append(len(cs))
                    return [s.p95 for s in evaluate(lm, seqs, vec, tuple(cs), T, stop_above=1.05)]

                sol, t_c, m_c = timed(lambda: solve(f, c0=1.0, per_round=k, batched=True, c_max=1e5), device)
                calib.append(
                    dict(
                        shape=shape,
                        per_round=k,
                        seconds=t_c,
                        gib=m_c,
                        rounds=len(rounds),
                        evaluations=len(sol.history),
                        status=sol.status,
                        c=sol.c,
                        p95=sol.value,
                    )
                )
                print(json.dumps(calib[-1]), flush=True)
        del lm
        if device == "cuda":
            torch.cuda.empty_cache()
    lines = [
        f"# GPU benchmark, {datetime.date.today()}, {gpu}" + (" (warm)" if args.warm else ""),
        "",
        f"torch {torch.__version__}; random-initialised Qwen2.5-shaped models in {str(dtype).replace('torch.', '')};",
        "prompts of 48 tokens; rollouts forced to exactly T tokens. `batched` = one isokl evaluation",
        "(steered rollout + base twins + per-token KL, 1 dose); `4 doses` = the same with 4 doses in",
        "one batch; `reference` = one prompt at a time (`generate` + two full forwards), run only",
        "where N x T <= 800. Command: `python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:]) + "`.",
        "",
        "| shape | N | T | batched s | GiB | 4 doses s | GiB | reference s | GiB | reference / batched |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = r["reference_s"] / r["batched_s"]
        lines.append(
            f"| {r['shape']} | {r['N']} | {r['T']} | {r['batched_s']:.2f} | {r['batched_gib']:.1f} | {r['four_doses_s']:.2f} | "
            f"{r['four_doses_gib']:.1f} | {r['reference_s']:.2f} | {r['reference_gib']:.1f} | {ratio:.1f}x |".replace("nan", "-")
        )
    lines += [
        "",
        "Full calibration, N = 4, T = 50, target 1 nat, tol 0.05, early stop on overshoot:",
        "",
        "| shape | doses per round | seconds | GiB | rounds | evaluations | status | p95 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in calib:
        lines.append(
            f"| {c['shape']} | {c['per_round']} | {c['seconds']:.2f} | {c['gib']:.1f} | {c['rounds']} | {c['evaluations']} | {c['status']} | {c['p95']:.3f} |"
        )
    report(lines, args.out)


def joint_main(args, device: str, dtype: torch.dtype, gpu: str) -> None:
    shape = "smoke" if args.smoke else "qwen2.5-7b"
    lm = build(shape, device, dtype)
    g = torch.Generator().manual_seed(2)
    seqs_all = torch.randint(100, SHAPES[shape][5] - 100, (16, 48), generator=g).tolist()
    evaluate(lm, seqs_all[:4], random_vector(lm), (1.0,), 4)  # warm-up (kernels)
    rows = joint_rows(lm, seqs_all, device, [int(x) for x in (args.ns or "4,16").split(",")], 50)
    lines = [
        f"# Joint calibration on a GPU, {datetime.date.today()}, {gpu}",
        "",
        f"torch {torch.__version__}; random-initialised {shape} in {str(dtype).replace('torch.', '')}; 9 random vectors",
        "(additive, additive, ablation x bands 0.2-0.4, 0.4-0.6, 0.6-0.8 of depth); prompts of 48 random tokens; T = 50.",
        "Sequential: `calibrate_iso_kl` one vector after another; joint: `calibrate_many`. 'in singles': the joint time",
        "over the mean single calibration (the goal: about 2). Command: `python benchmarks/bench_gpu.py "
        + " ".join(sys.argv[1:])
        + "`.",
        "",
        "| N | sequential s | joint s | ratio | joint in singles | GiB | doses per round | evaluations | statuses (same) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['N']} | {r['sequential_s']:.1f} | {r['joint_s']:.1f} | {r['ratio']:.2f} | {r['joint_in_singles']:.1f} | "
            f"{r['gib']:.1f} | {r['rounds']} | {r['evaluations']} | {r['statuses']} ({r['same_status']}) |"
        )
    report(lines, args.out)


if __name__ == "__main__":
    main()
