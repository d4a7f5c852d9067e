"""The dose where it is served (docs/runtimes.md; protocol frozen in docs/decisions.md, "The dose where it is served").

For each bundled model x {mean_diff, pca} at the study's seed 0 (sentiment pairs, default layers, the 4 seed-0
calibration prompts, T = 20): c* in transformers float32, then the held-out p95 of that vector at c* on the study's
64 held-out generic prompts in transformers float32, transformers bfloat16 and llama.cpp on the model's GGUF file (the
exported control vector), each with its 90% prompt-bootstrap interval; then c* found with every evaluation in
llama.cpp, and its ratio to the transformers c*.

    .venv/bin/python scripts/runtime_table.py                          # -> runs/runtimes/table.{md,csv}
    .venv/bin/python scripts/runtime_table.py --out results/runtimes   # the published copy

About 10 minutes on 2 cores. Needs the llama extra (scripts/setup.sh builds it).
"""

from __future__ import annotations

import argparse
import csv
import io
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")
COLUMNS = (
    "model", "method", "layers", "c_star_tf", "c_star_study", "p95_f32", "p95_f32_lo", "p95_f32_hi", "p95_bf16",
    "p95_bf16_lo", "p95_bf16_hi", "p95_llama", "p95_llama_lo", "p95_llama_hi", "quantization", "c_star_llama",
    "c_star_llama_lo", "c_star_llama_hi", "llama_status", "ratio",
)  # fmt: skip


def log(msg: str, t0: float) -> None:
    print(f"[runtime_table {time.time() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True)


def committed_c_star(model: str, method: str) -> str:
    """Study v2's c* of this cell (seed 0, T = 20), as committed."""
    with (ROOT / "results" / "v2" / "calibration.csv").open() as f:
        for r in csv.DictReader(f):
            if (r["model"], r["method"], r["seed"], r["window"]) == (model, method, "0", "20"):
                return r["c_star"]
    return ""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def rows_of(model: str, methods: list[str], n_heldout: int, t0: float) -> list[dict]:
    import isokl
    from isokl.core.calibrate import calibrate_iso_kl
    from isokl.core.formats.concept import DEFAULT, Concept

    concept = Concept.load(DEFAULT)
    pairs, cal, held = concept.pairs(0), concept.calibration(0, 4), concept.heldout(n_heldout)
    lm = isokl.load(model)
    rows = []
    for method in methods:
        vec = isokl.extract(lm, pairs, method)
        res = calibrate_iso_kl(lm, vec, cal, T=20, progress=False)
        log(f"{model} {method}: c*_tf = {res.c_star:.6g} ({res.status})", t0)
        f32 = isokl.check(lm, res.vector, held, T=20)
        log(f"{model} {method}: float32 held-out p95 {f32.p95:.4f}", t0)
        ll = isokl.check(lm, res.vector, held, T=20, runtime="llama.cpp")
        log(f"{model} {method}: llama.cpp held-out p95 {ll.p95:.4f} ({ll.dtype})", t0)
        served = isokl.calibrate(lm, vec, cal, T=20, runtime="llama.cpp", progress=False)[0]
        log(f"{model} {method}: c*_llama = {served.c_star:.6g} ({served.status})", t0)
        rows.append(
            {
                "model": model,
                "method": method,
                "layers": f"{vec.layers[0]}-{vec.layers[-1]}",
                "c_star_tf": res.c_star,
                "c_star_study": committed_c_star(model, method),
                "p95_f32": f32.p95,
                "p95_f32_lo": f32.lo,
                "p95_f32_hi": f32.hi,
                "p95_llama": ll.p95,
                "p95_llama_lo": ll.lo,
                "p95_llama_hi": ll.hi,
                "quantization": ll.dtype,
                "c_star_llama": served.c_star,
                "c_star_llama_lo": served.c_interval.lo,
                "c_star_llama_hi": served.c_interval.hi,
                "llama_status": served.status,
                "ratio": served.c_star / res.c_star,
                "_vector": res.vector,
            }
        )
    del lm
    bf = isokl.load(model, dtype=torch.bfloat16)
    for row in rows:
        b = isokl.check(bf, row.pop("_vector"), held, T=20)
        row.update(p95_bf16=b.p95, p95_bf16_lo=b.lo, p95_bf16_hi=b.hi)
        log(f"{model} {row['method']}: bfloat16 held-out p95 {b.p95:.4f}", t0)
    return rows


def table_md(rows: list[dict], n_heldout: int, threads: int, cpu: str) -> str:
    from isokl.core.runtimes.ggml import version
    from isokl.report.thresholds import HOLDOUT_BAND

    lo, hi = HOLDOUT_BAND

    def p(r: dict, k: str) -> str:
        mark = "" if lo <= r[k] <= hi else " **out**"
        return f"{r[k]:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]{mark}"

    out = [
        "| model | method | layers | c* (transformers f32; Study v2) | held-out p95, transformers f32 | transformers bf16 | "
        "llama.cpp GGUF | GGUF | c* in llama.cpp [95%] | c* ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['method']} | {r['layers']} | {r['c_star_tf']:.5g} ({float(r['c_star_study'] or 'nan'):.5g}) | "
            f"{p(r, 'p95_f32')} | "
            f"{p(r, 'p95_bf16')} | {p(r, 'p95_llama')} | {r['quantization']} | {r['c_star_llama']:.5g} "
            f"[{r['c_star_llama_lo']:.4g}, {r['c_star_llama_hi']:.4g}]"
            + ("" if r["llama_status"] == "converged" else f" ({r['llama_status']})")
            + f" | {r['ratio']:.3f} |"
        )
    out.append("")
    out.append(
        f"Held-out p95 per-token KL at the transformers-float32 c* on the study's first {n_heldout} held-out generic "
        f"prompts, T = 20, with the 90% prompt-bootstrap interval; **out** = outside R1's band [{lo}, {hi}]. c* in "
        f"llama.cpp: calibrated on the same 4 prompts with every evaluation in llama.cpp, its 95% interval; ratio = c* "
        f"llama.cpp / c* transformers. {version()} (GGML_NATIVE=OFF), {threads} threads, {cpu}."
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/runtimes", help="folder for table.md and table.csv (default runs/runtimes)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default="mean_diff,pca")
    ap.add_argument("--n-heldout", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    from isokl.core.model.files import write_all
    from isokl.core.model.models import set_threads
    from isokl.core.runtimes.ggml import binding

    binding()  # one line naming the extra, before any model loads
    threads = set_threads(a.threads)
    t0 = time.time()
    rows = []
    for model in a.models.split(","):
        rows += rows_of(model, a.methods.split(","), a.n_heldout, t0)
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    md = table_md(rows, a.n_heldout, threads, cpu_name())
    write_all(Path(a.out), {"table.csv": buf.getvalue().encode(), "table.md": md.encode()})
    print(md)
    log(f"wrote {a.out}/table.md and table.csv", t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
