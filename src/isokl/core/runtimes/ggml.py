"""ggml: llama-cpp-python's libraries, for the llama.cpp runtime: the binding itself (`binding`: one line naming the
extra where it is missing), libggml's C functions with their signatures (`_ggml`, set once), and control-vector files
as llama.cpp reads them (`read_cvec` -> `CvecFile`).

Control-vector files (`read_cvec`) are read by llama.cpp's own GGUF parser (libggml's `gguf_init_from_file`, the one
`common_control_vector_load` uses) under that loader's rules: tensors `direction.L`, L >= 1, F32, one dimension, one
width; the buffer llama.cpp gets starts at layer 1.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import RuntimeMissing

HINT = (
    "the llama.cpp runtime needs llama-cpp-python, built from source (about 4 minutes on 2 cores): `bash "
    "scripts/setup.sh` installs it into .venv (ISOKL_LLAMA=0 skips it), or `pip install 'isokl[llama]'`"
)


class LlamaError(ValueError):
    pass


def binding():
    """The llama_cpp module, or one line naming the extra."""
    try:
        import llama_cpp
    except ImportError:
        raise RuntimeMissing(HINT) from None
    return llama_cpp


def available() -> bool:
    try:
        binding()
    except RuntimeMissing:
        return False
    return True


def version() -> str:
    """'llama-cpp-python 0.3.36' (its vendored llama.cpp)."""
    return f"llama-cpp-python {binding().__version__}"


# ---- GGUF files through libggml's own parser ----


@functools.cache
def _ggml():
    """libggml-base from llama-cpp-python's lib folder, with the signatures used here (loaded once)."""
    ll = binding()
    libdir = Path(ll.__file__).parent / "lib"
    found = sorted(libdir.glob("libggml-base.*")) or sorted(libdir.glob("libggml.*"))
    if not found:
        raise RuntimeMissing(f"libggml-base not found in {libdir}; reinstall llama-cpp-python")
    lib = ctypes.CDLL(str(found[0]))
    vp, cp, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64

    class Params(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

    sig = {
        "gguf_init_from_file": ([cp, Params], vp),
        "gguf_free": ([vp], None),
        "gguf_get_n_tensors": ([vp], i64),
        "gguf_get_tensor_name": ([vp, i64], cp),
        "gguf_get_tensor_type": ([vp, i64], ctypes.c_int),
        "gguf_get_n_kv": ([vp], i64),
        "gguf_get_key": ([vp, i64], cp),
        "gguf_get_kv_type": ([vp, i64], ctypes.c_int),
        "gguf_get_val_str": ([vp, i64], cp),
        "gguf_get_val_f64": ([vp, i64], ctypes.c_double),
        "gguf_get_val_f32": ([vp, i64], ctypes.c_float),
        "gguf_get_val_u32": ([vp, i64], ctypes.c_uint32),
        "gguf_get_val_i32": ([vp, i64], ctypes.c_int32),
        "ggml_get_tensor": ([vp, cp], vp),
        "ggml_get_name": ([vp], cp),
        "ggml_get_data": ([vp], vp),
        "ggml_nelements": ([vp], i64),
        "ggml_n_dims": ([vp], ctypes.c_int),
        "ggml_free": ([vp], None),
    }
    for name, (args, res) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib, Params


# gguf_type codes (ggml/include/gguf.h)
_KV = {4: "u32", 5: "i32", 6: "f32", 8: "str", 12: "f64"}


@dataclass(frozen=True)
class CvecFile:
    """A control vector as llama.cpp reads it: {layer: float32 [d]} and its key-value fields (strings and numbers)."""

    layers: dict[int, np.ndarray]
    fields: dict[str, object]

    def buffer(self, n_layers: int) -> np.ndarray:
        """The flat float32 buffer `llama_set_adapter_cvec` takes: layers 1..n_layers-1, layer 1 first."""
        d = next(iter(self.layers.values())).shape[0]
        buf = np.zeros((n_layers - 1) * d, dtype=np.float32)
        for layer, t in self.layers.items():
            buf[(layer - 1) * d : layer * d] += t
        return buf


def read_cvec(path: str | Path) -> CvecFile:
    """A control-vector GGUF read by llama.cpp's own parser under `common_control_vector_load`'s rules; a file it
    would refuse is refused here in one line."""
    path = Path(path)
    lib, Params = _ggml()
    ctx = ctypes.c_void_p()
    g = lib.gguf_init_from_file(str(path).encode(), Params(False, ctypes.pointer(ctx)))
    if not g:
        raise LlamaError(f"{path}: llama.cpp cannot read it as a GGUF file (gguf_init_from_file failed)")
    try:
        fields: dict[str, object] = {}
        for i in range(lib.gguf_get_n_kv(g)):
            kind = _KV.get(lib.gguf_get_kv_type(g, i))
            if kind is not None:
                value = getattr(lib, f"gguf_get_val_{kind}")(g, i)
                fields[lib.gguf_get_key(g, i).decode()] = value.decode() if kind == "str" else value
        layers: dict[int, np.ndarray] = {}
        width = None
        for i in range(lib.gguf_get_n_tensors(g)):
            name = lib.gguf_get_tensor_name(g, i).decode()
            head, _, tail = name.partition(".")
            if head != "direction" or not tail.isdigit():
                raise LlamaError(f"{path}: tensor {name!r}: llama.cpp's loader wants direction.L")
            layer = int(tail)
            if layer == 0:
                raise LlamaError(f"{path}: direction.0: llama.cpp refuses layer 0 (block 0 is never steered)")
            if lib.gguf_get_tensor_type(g, i) != 0:  # GGML_TYPE_F32
                raise LlamaError(f"{path}: {name} is not F32, which llama.cpp's loader requires")
            t = lib.ggml_get_tensor(ctx, name.encode())
            n = lib.ggml_nelements(t)
            if lib.ggml_n_dims(t) != 1 or (width is not None and n != width):
                raise LlamaError(f"{path}: {name} is not one vector of the file's width")
            width = n
            data = (ctypes.c_float * n).from_address(lib.ggml_get_data(t))
            layers[layer] = layers.get(layer, np.zeros(n, np.float32)) + np.frombuffer(data, np.float32)
        if not layers:
            raise LlamaError(f"{path}: no direction tensors (llama.cpp would load nothing)")
        return CvecFile(dict(sorted(layers.items())), fields)
    finally:
        lib.gguf_free(g)
        if ctx.value:
            lib.ggml_free(ctx)
