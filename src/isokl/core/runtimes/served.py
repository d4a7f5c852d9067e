"""Served: the llama.cpp runtime, a vector's dose where it is served (llama.cpp on the model's GGUF file).

`open_gguf(lm)` opens the GGUF file a model is served from (a bundled model's own file, else the one you name) in
llama.cpp and checks that it is the model `lm` holds: depth, width and the token ids of a probe text. `evaluate` is
one dose there: the vector goes in as llama.cpp's control-vector buffer, built by the same arithmetic as the exported
file (`gguf.scaled`); `measure` goes through the exported file itself. `solve` runs the calibration's solvers
(`registry.Job`) with every evaluation's rollouts and KL from llama.cpp, so c* is the dose of the quantized model as
served; the vector records the runtime, the weights file and its quantization. llama.cpp adds a fixed vector c v
whatever the method, so the runtime refuses a method whose rule reads the activation (`fixed_vectors_only`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..formats.vector import Vector
from ..model.models import LM
from .ggml import CvecFile, LlamaError, binding, read_cvec, version
from .llamacpp import Llama
from .registry import Job, Runtime, register

N_CTX_MIN = 512
MAX_SEQ = 64  # prompts per llama.cpp batch (llama.cpp allows 256 sequences; 64 keeps the KV cache and logits small)


def gguf_of(lm: LM, gguf: str | Path | None = None, flag: str = "--gguf") -> Path:
    """The GGUF file `lm` is served from: `gguf` if given, else a bundled model's own file."""
    if gguf:
        p = Path(gguf).expanduser()
        if not p.is_file():
            raise LlamaError(f"{flag}: {p} is not a file")
        return p
    from ..model.bundled import BUNDLED, gguf_path

    if lm.id not in BUNDLED:
        raise LlamaError(f"{flag}: {lm.id} is not a bundled model; give the GGUF file it is served from")
    return gguf_path(BUNDLED[lm.id])


def _probe_ids(llama: Llama, text: str) -> list[int]:
    ll = llama.ll
    raw = text.encode()
    buf = (ll.llama_token * (len(raw) + 16))()
    n = ll.llama_tokenize(llama.vocab, raw, len(raw), buf, len(buf), False, True)
    if n < 0:
        raise LlamaError(f"llama.cpp could not tokenize the probe ({n})")
    return list(buf[:n])


def check_model(lm: LM, llama: Llama, sample: str) -> None:
    """The GGUF holds the model `lm` holds: same depth and width, and llama.cpp reads `sample` (a formatted prompt) as
    the same token ids as isokl's tokenizer; else one line."""
    f = llama.file
    if (f.n_layers, f.d_model) != (lm.n_layers, lm.d_model):
        raise LlamaError(
            f"{f.path.name}: a {f.arch} of {f.n_layers} layers x {f.d_model}; {lm.id} has {lm.n_layers} x {lm.d_model}: "
            "not the same model"
        )
    ours = lm.tokenizer(sample, add_special_tokens=False)["input_ids"]
    theirs = _probe_ids(llama, sample)
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
        raise LlamaError(
            f"{f.path.name}: llama.cpp reads a prompt of {lm.id} as other token ids (first difference at token {at}: "
            f"{ours[at : at + 3]} vs {theirs[at : at + 3]}): not this model's tokenizer"
        )


def open_gguf(lm: LM, seqs: list[list[int]], T: int, gguf: str | Path | None = None, sample: str = "") -> Llama:
    """llama.cpp on `lm`'s GGUF file with room for `seqs` + T tokens each in one batch, checked against `lm`."""
    n_seq = max(1, min(MAX_SEQ, len(seqs)))  # more prompts run in batches of MAX_SEQ (`Llama.evaluate`)
    longest = sorted((len(s) + T for s in seqs), reverse=True)[:n_seq]
    n_ctx = max(N_CTX_MIN, 256 * math.ceil(sum(longest) / 256))
    llama = Llama(gguf_of(lm, gguf), n_ctx=n_ctx, n_seq=n_seq)
    try:
        check_model(lm, llama, sample or "The quick brown fox jumps over the lazy dog.")
    except LlamaError:
        llama.close()
        raise
    return llama


def cvec_buffer(vector: Vector, c: float, n_layers: int) -> np.ndarray:
    """`vector` at dose c as llama.cpp's control-vector buffer, from the exported file's own arithmetic."""
    from ..formats.gguf import scaled

    return CvecFile({layer: t.numpy() for layer, t in scaled(vector, c).items()}, {}).buffer(n_layers)


def evaluate(llama: Llama, lm: LM, seqs: list[list[int]], T: int, vector: Vector, c: float, stop_above=None):
    """One dose of `vector` in llama.cpp (`Llama.evaluate`); c = 0 sets no control vector at all."""
    llama.set_cvec(cvec_buffer(vector, c, llama.file.n_layers) if c != 0 else None)
    return llama.evaluate(seqs, T, lm.eos_ids, stop_above)


def measure(lm: LM, vector: Vector, seqs: list[list[int]], T: int, alpha: float, *, gguf=None, sample: str = ""):
    """`vector` at alpha x c* as served: exported as a control-vector GGUF, read back by llama.cpp's parser, applied to
    the model's GGUF file -> (KLStats, the file's quantization, the file described)."""
    import tempfile

    from ..formats.gguf import export

    with open_gguf(lm, seqs, T, gguf, sample) as llama:
        with tempfile.TemporaryDirectory() as tmp:
            cvec = read_cvec(export(vector, "gguf", Path(tmp) / "vector.gguf", alpha))
        llama.set_cvec(cvec.buffer(llama.file.n_layers))
        st = llama.evaluate(seqs, T, lm.eos_ids).stats(alpha * vector.coeff)
        return st, llama.file.quantization, llama.file.describe()


def solve(
    lm: LM, jobs: list[Job], seqs: list[list[int]], T: int, *, stop, report, gguf=None, sample: str = "", **_
) -> tuple[dict[str, str], list]:
    """The solvers (`registry.Job`) to their end with every evaluation in llama.cpp on `lm`'s GGUF file:
    one vector after the other (a control vector is context-wide), every prompt in one llama.cpp batch -> the fields
    each Calibration records (runtime, weights file, quantization; no torch dtype), and no batched rounds."""
    with open_gguf(lm, seqs, T, gguf, sample) as llama:
        for j, job in enumerate(jobs):
            while job.pending:
                t1 = time.time()
                out = []
                for c in job.pending:
                    st = evaluate(llama, lm, seqs, T, job.vector, c, stop).stats(c)
                    if not math.isfinite(st.p95):
                        job.fail(f"{job.vector.label}: a non-finite KL at c = {c:.6g} in llama.cpp")
                        break
                    job.stats[c] = st
                    out.append(st.p95)
                    if report is not None:
                        report(j, st, time.time() - t1)
                else:
                    job.tell(out)
        return {
            "dtype": "",
            "runtime": f"llama.cpp ({version()})",
            "weights": llama.file.describe(),
            "quantization": llama.file.quantization,
        }, []


def _installed() -> None:
    binding()  # raises RuntimeMissing, naming the extra and how it builds


LLAMA_CPP = register(
    Runtime(
        name="llama.cpp",
        summary="llama.cpp on the model's GGUF file, quantized as served (the `llama` extra)",
        installed=_installed,
        solve=solve,
        measure=measure,
        fixed_vectors_only=True,
        reads_gguf=True,
    )
)
