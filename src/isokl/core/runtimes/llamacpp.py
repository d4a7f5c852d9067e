"""llama.cpp as a second runtime: the dose measured where a vector is served, on the model's own GGUF file.

`Llama(path)` opens a GGUF model through llama-cpp-python's C API (ctypes; its high-level `Llama` class keeps one
sequence and no second context) and holds two contexts on the one model: *steered*, with a control vector set the
way llama.cpp's `--control-vector` sets one (`llama_set_adapter_cvec`: the vector of block L added to block L's output
after its residual add, block 0 never steered), and *base*, with none. `evaluate` rolls every prompt out greedily in
the steered context, all prompts in one batch (one llama.cpp sequence each), and feeds each chosen token to the base
context in the same batch shape, so the two contexts run the same arithmetic on the same inputs: at c = 0 their
logits are the same bits and KL is exactly 0. Per-token KL(steered || base) comes from llama.cpp's full logits, in
float64, scored as isokl scores a transformers rollout (`kl.kl_stats`: the same statistic, the same validity rule:
a row ends after its first EOS, which is scored).

What differs from the transformers runtime is llama.cpp's arithmetic, which is the point: quantized weights used as
stored (Q4_1, Q4_K ...), activations quantized to 8 bits inside each quantized dot product, an f16 KV cache (llama.cpp's
default, what a server uses), and its own kernels. The prompts' token ids are isokl's (`LM.encode` of `LM.format`),
checked against the GGUF's own vocabulary (`served.check_model`), so both runtimes read the same tokens. The base
context keeps its prompts' cache across doses (the base does not change with c); each dose's tokens are removed after it.

The binding, libggml's functions and control-vector files are `ggml`'s.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..stats.kl import KLStats, kl_rows, kl_stats
from ..stats.statistic import P95
from .ggml import LlamaError, _ggml, binding

_quiet = None


def _silence(ll) -> None:
    """llama.cpp logs every load to stderr; keep its errors only."""
    global _quiet
    if _quiet is None:

        @ll.llama_log_callback
        def cb(level, text, _user):
            if level == 4:  # GGML_LOG_LEVEL_ERROR
                import sys

                print(f"[llama.cpp] {text.decode(errors='replace').rstrip()}", file=sys.stderr)

        _quiet = cb
        ll.llama_log_set(_quiet, ctypes.c_void_p())
        ll.llama_backend_init()


def _sha256(path: Path) -> str:
    """The file's sha256, once per (file, size, modification time) in a process (a GGUF model is 100 MB to GBs)."""
    st = path.stat()
    return _sha256_of(path.resolve(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: Path, _size: int, _mtime: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---- a model in two contexts ----


@dataclass(frozen=True)
class ModelFile:
    """A GGUF model file as llama.cpp reads it."""

    path: Path
    sha256: str
    quantization: str  # llama.cpp's file type, e.g. "Q4_1" or "Q4_K - Medium"
    arch: str
    n_layers: int
    d_model: int
    n_vocab: int

    def describe(self) -> str:
        return f"{self.path.name} (sha256 {self.sha256[:12]}, {self.quantization})"


@dataclass(frozen=True)
class Evaluation:
    """One dose in llama.cpp: KL [n T] (NaN where not scored), which values are scored, the steered tokens, and the
    steps run (< T where every row ended or the dose was stopped early)."""

    kl: torch.Tensor
    valid: torch.Tensor
    tokens: list[list[int]]
    steps: int
    stopped: bool

    def stats(self, c: float) -> KLStats:
        return kl_stats(self.kl, self.valid, c, self.stopped)


class Llama:
    """One GGUF model in llama.cpp, a steered and a base context on it. `evaluate(seqs, T, c, buffer)` is one dose.
    Use as a context manager, or `close()`: llama.cpp's memory is not Python's."""

    def __init__(self, path: str | Path, *, threads: int | None = None, n_ctx: int = 4096, n_seq: int = 16):
        ll = binding()
        _silence(ll)
        self.ll = ll
        path = Path(path)
        if not path.is_file():
            raise LlamaError(f"{path}: no such GGUF file")
        mp = ll.llama_model_default_params()
        mp.use_mmap = True
        self.model = ll.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise LlamaError(f"{path}: llama.cpp cannot load it as a model")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.threads = threads or torch.get_num_threads()
        self.n_ctx, self.n_seq = n_ctx, n_seq
        self._base_key: tuple | None = None  # the prompt set the base context holds (`_base`)
        self._base_logits = torch.empty(0)
        self._cvec: np.ndarray | None = None  # the steered context's control vector
        self.contexts = [self._context(), self._context()]  # steered, base
        ftype = self._meta("general.file_type")
        self.file = ModelFile(
            path=path,
            sha256=_sha256(path),
            quantization=_FTYPES.get(int(ftype), f"file type {ftype}") if ftype.isdigit() else "unknown",
            arch=self._meta("general.architecture"),
            n_layers=ll.llama_model_n_layer(self.model),
            d_model=ll.llama_model_n_embd(self.model),
            n_vocab=ll.llama_vocab_n_tokens(self.vocab),
        )

    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.ll.llama_model_meta_val_str(self.model, key.encode(), buf, 256)
        return buf.value.decode(errors="replace") if n >= 0 else ""

    def _context(self, cb=None):
        ll = self.ll
        cp = ll.llama_context_default_params()
        if cb is not None:
            cp.cb_eval = cb
        cp.n_ctx = self.n_ctx
        cp.n_batch = self.n_ctx
        cp.n_ubatch = min(512, self.n_ctx)
        cp.n_seq_max = self.n_seq
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.kv_unified = True
        cp.no_perf = True
        ctx = ll.llama_init_from_model(self.model, cp)
        if not ctx:
            raise LlamaError("llama.cpp could not create a context (out of memory?)")
        return ctx

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "contexts", None):
            for ctx in self.contexts:
                self.ll.llama_free(ctx)
            self.contexts = []
        if getattr(self, "model", None):
            self.ll.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        self.close()

    # -- the control vector --

    def set_cvec(self, buffer: np.ndarray | None, ctx=None) -> None:
        """Set the steered context's control vector (`CvecFile.buffer`), or clear it with None; as llama.cpp's
        `--control-vector` does (layers 1..n_layers-1)."""
        ctx = ctx or self.contexts[0]
        self._cvec = buffer
        if buffer is None:
            rc = self.ll.llama_set_adapter_cvec(ctx, None, 0, self.file.d_model, 1, self.file.n_layers)
        else:
            buf = np.ascontiguousarray(buffer, dtype=np.float32)
            if buf.size % self.file.d_model:
                raise LlamaError(f"a control vector of {buf.size} values is not a whole number of width {self.file.d_model}")
            self._buf = buf  # llama.cpp copies it, but keep it alive across the call
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = self.ll.llama_set_adapter_cvec(ctx, ptr, buf.size, self.file.d_model, 1, self.file.n_layers)
        if rc != 0:
            raise LlamaError(f"llama.cpp refused the control vector (llama_set_adapter_cvec returned {rc})")

    # -- decoding --

    def _decode(self, ctx, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, sequence, wants logits)."""
        ll = self.ll
        batch = ll.llama_batch_init(len(items), 0, 1)
        try:
            for i, (tok, pos, seq, want) in enumerate(items):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, want
            batch.n_tokens = len(items)
            rc = ll.llama_decode(ctx, batch)
            if rc != 0:
                raise LlamaError(f"llama_decode returned {rc} (context of {self.n_ctx} tokens too small?)")
        finally:
            ll.llama_batch_free(batch)

    def _logits(self, ctx, k: int) -> torch.Tensor:
        """The last decode's k output rows of logits [k V], as float64 (a copy: llama.cpp reuses its buffer)."""
        ptr = self.ll.llama_get_logits(ctx)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(k, self.file.n_vocab)).astype(np.float64))

    def _clear(self, ctx) -> None:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(ctx), True)

    def _base(self, seqs: list[list[int]]) -> torch.Tensor:
        """The base context's prompts, prefilled once for a prompt set and kept (the base is the same at every dose):
        each evaluation's tokens are removed from its sequences afterwards (`_trim`)."""
        key = tuple(map(tuple, seqs))
        if self._base_key != key:
            base = self.contexts[1]
            self._clear(base)
            self._base_logits, self._base_key = self.prefill(base, seqs), key
        return self._base_logits

    def _trim(self, seqs: list[list[int]]) -> None:
        mem = self.ll.llama_get_memory(self.contexts[1])
        for s, seq in enumerate(seqs):
            if not self.ll.llama_memory_seq_rm(mem, s, len(seq), -1):
                self._base_key = None  # could not remove: prefill again next time

    def check_room(self, seqs: list[list[int]], T: int) -> None:
        if len(seqs) > self.n_seq:
            raise LlamaError(f"{len(seqs)} prompts in one llama.cpp batch; this context holds {self.n_seq} (n_seq)")
        need = sum(len(s) + T for s in seqs)
        if need > self.n_ctx:
            raise LlamaError(f"{len(seqs)} prompts x (prompt + {T} tokens) = {need} tokens; the context holds {self.n_ctx}")

    def prefill(self, ctx, seqs: list[list[int]]) -> torch.Tensor:
        """Every prompt into its own sequence in one batch -> the logits at each prompt's last token [n V]."""
        self._decode(ctx, [(tok, p, s, p == len(seq) - 1) for s, seq in enumerate(seqs) for p, tok in enumerate(seq)])
        return self._logits(ctx, len(seqs))

    def evaluate(self, seqs: list[list[int]], T: int, eos: tuple[int, ...], stop_above: float | None = None) -> Evaluation:
        """The steered greedy rollout of every prompt (the control vector set by `set_cvec`) beside the base, in
        lockstep: per-token KL(steered || base) [n T]. stop_above: end early once the pooled p95 over n x T must
        exceed it (`P95.must_exceed`), as `rollout` does. More prompts than the contexts' sequences (`n_seq`) run in
        batches of n_seq, one after the other (then without the early stop: each batch would see only its part)."""
        if len(seqs) > self.n_seq:
            parts = [self._lockstep(seqs[i : i + self.n_seq], T, eos, None) for i in range(0, len(seqs), self.n_seq)]
            return Evaluation(
                torch.cat([p.kl for p in parts]),
                torch.cat([p.valid for p in parts]),
                [tok for p in parts for tok in p.tokens],
                max(p.steps for p in parts),
                False,
            )
        return self._lockstep(seqs, T, eos, stop_above)

    def _lockstep(self, seqs: list[list[int]], T: int, eos: tuple[int, ...], stop_above: float | None) -> Evaluation:
        self.check_room(seqs, T)
        steered, base = self.contexts
        self._clear(steered)
        y = self._base(seqs)
        n = len(seqs)
        kl = torch.full((n, T), math.nan, dtype=torch.float64)
        valid = torch.zeros((n, T), dtype=torch.bool)
        tokens: list[list[int]] = [[] for _ in seqs]
        try:
            x = self.prefill(steered, seqs)  # [live V] steered logits; y: the base's
            live = list(range(n))
            need = P95.must_exceed(n * T) if stop_above is not None else 0
            above, steps, stopped = 0, 0, False
            for t in range(T):
                lx, ly = x.log_softmax(-1), y.log_softmax(-1)
                step = kl_rows(lx, ly)  # float64; exactly 0 where the two rows are the same bits
                nxt = x.argmax(-1).tolist()
                rows = torch.tensor(live)
                kl[rows, t], valid[rows, t] = step, True
                above += int((step >= stop_above).sum()) if stop_above is not None else 0
                for s, tok in zip(live, nxt, strict=True):
                    tokens[s].append(tok)
                live = [s for s, tok in zip(live, nxt, strict=True) if tok not in eos]
                steps = t + 1
                if stop_above is not None and above >= need:
                    stopped = t + 1 < T and bool(live)
                    break
                if not live or t == T - 1:
                    break
                items = [(tokens[s][-1], len(seqs[s]) + t, s, True) for s in live]
                self._decode(steered, items)
                self._decode(base, items)
                x, y = self._logits(steered, len(live)), self._logits(base, len(live))
        finally:
            self._trim(seqs)  # the base keeps its prompts only, also after an error
        return Evaluation(kl, valid, tokens, steps, stopped)

    def block_outputs(self, ids: list[int], layers: tuple[int, ...], steered: bool = True) -> dict[int, np.ndarray]:
        """What llama.cpp's blocks output on one sequence, read from its own graph (`l_out-L`, the tensor each model's
        graph names after `build_cvec`): {L: float32 [len(ids) d]}, in a context of its own with the steered context's
        control vector (or none)."""
        lib, _ = _ggml()
        want = {f"l_out-{layer}".encode(): layer for layer in layers}
        got: dict[int, np.ndarray] = {}

        @self.ll.ggml_backend_sched_eval_callback
        def cb(t, ask, _user):
            name = lib.ggml_get_name(t)
            if ask:
                return name in want
            if name in want:
                n = lib.ggml_nelements(t)
                data = (ctypes.c_float * n).from_address(lib.ggml_get_data(t))
                got[want[name]] = np.frombuffer(data, np.float32).reshape(len(ids), -1).copy()
            return True

        ctx = self._context(cb)
        try:
            if steered and self._cvec is not None:
                self.set_cvec(self._cvec, ctx)
            self._decode(ctx, [(tok, p, 0, True) for p, tok in enumerate(ids)])
        finally:
            self.ll.llama_free(ctx)
        return got

    def logits(self, ids: list[int], steered: bool = True) -> np.ndarray:
        """Every position's logits [len(ids) V] of one sequence in one pass (tests)."""
        ctx = self.contexts[0 if steered else 1]
        self._clear(ctx)
        self._base_key = None
        self._decode(ctx, [(tok, p, 0, True) for p, tok in enumerate(ids)])
        return self._logits(ctx, len(ids)).numpy()


_FTYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}  # fmt: skip  (llama_ftype, include/llama.h)
