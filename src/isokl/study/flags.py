"""Flags: the grammar every verb's flags share -> checked values or one `ConfigError` naming the flag (no torch):
number and name lists, layer specs, output paths, methods, models and devices, the Ray extra, the quick protocol's
sizes, and the checks the vector verbs share (runtimes, vector files, scorers, dtypes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..core.formats.concept import DEFAULT as CONCEPT_DEFAULT  # noqa: F401  (the flags' default concept, re-used by plan)

# The quick protocol: R1-R6 for a concept on one small model in <= 10 minutes on a 2-core CPU
# (benchmarks/bench_quick_study.py measures it). Three seeds stay, so intervals and R6 still mean something.
# The judge (`isokl calibrate`) reads its held-out sizes and horizon from here too.
QUICK: dict[str, Any] = {
    "models": "smollm2-135m",
    "windows": "20",
    "n_heldout": "24,16,16",
    "horizon": 30,
    "dose_alphas": "0.5,1.5",
}


THREADS_HELP = "torch CPU threads (0: $ISOKL_THREADS, else every core this process may use)"


class ConfigError(ValueError):
    """Bad input; the message starts with the flag (or file) it is about."""


def split(s: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [x.strip() for x in str(s).split(",") if x.strip()]


def ints(flag: str, s: str, lo: int) -> list[int]:
    out = []
    for x in split(s) or [""]:
        if not x.lstrip("-").isdigit():
            raise ConfigError(f"{flag}: {x!r} is not a whole number (give e.g. {flag} {lo},{lo + 1})")
        if int(x) < lo:
            raise ConfigError(f"{flag}: {x} is below {lo}")
        out.append(int(x))
    return out


def floats(flag: str, s: str) -> list[float]:
    """Positive finite numbers."""
    out = []
    for x in split(s) or [""]:
        try:
            v = float(x)
        except ValueError:
            raise ConfigError(f"{flag}: {x!r} is not a number") from None
        if not (v > 0 and v < float("inf")):
            raise ConfigError(f"{flag}: {x} must be a positive finite number")
        out.append(v)
    return out


def layers(flag: str, spec: str, n_layers: int | None = None, model: str = "the model") -> tuple[int, ...]:
    """A steered-layer spec -> block indices: '10-20' (inclusive), '10,12,14', '3,5-7', or a band of depth '0.25-0.75'
    (fractions: blocks round(lo x depth) .. round(hi x depth) - 1, as the default middle band). Without n_layers only
    the syntax is checked (and () returned); with it, a layer outside 0..n_layers-1 is an error naming the depth."""
    s = spec.replace(" ", "")
    if not s:
        raise ConfigError(f"{flag}: empty; give e.g. {flag} 10-20, {flag} 10,12,14 or {flag} 0.25-0.75")
    if "." in s:  # a band of depth
        lo_s, sep, hi_s = s.partition("-")
        try:
            lo, hi = float(lo_s), float(hi_s if sep else lo_s)
        except ValueError:
            raise ConfigError(f"{flag}: {spec!r} is not a band of depth like 0.25-0.75") from None
        if not 0 <= lo <= hi <= 1:
            raise ConfigError(f"{flag}: {spec!r}: a band of depth needs 0 <= lo <= hi <= 1")
        if n_layers is None:
            return ()
        from ..core.model.hooks import default_layers  # the one band-of-depth rule (torch: only once a depth is known)

        out = default_layers(n_layers, (lo, hi))
    else:
        picked: list[int] = []
        for part in s.split(","):
            a, sep, b = part.partition("-")
            if not a.isdigit() or (sep and not b.isdigit()):
                raise ConfigError(f"{flag}: {part!r} is not a layer or a range (give e.g. {flag} 10-20 or {flag} 10,12,14)")
            if sep and int(b) < int(a):
                raise ConfigError(f"{flag}: {part!r} runs backwards; give the lower layer first")
            picked += range(int(a), int(b) + 1) if sep else [int(a)]
        out = tuple(sorted(set(picked)))
        if n_layers is None:
            return ()
    bad = [x for x in out if not 0 <= x < n_layers]
    if bad:
        raise ConfigError(f"{flag}: layer {bad[0]} is out of range: {model} has {n_layers} blocks (layers 0..{n_layers - 1})")
    return out


def at_least(flag: str, v, lo) -> None:
    if v < lo:
        raise ConfigError(f"{flag}: {v} is below {lo}")


def _first_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(flag: str, d: Path, what: Path) -> None:
    if not d.is_dir():
        raise ConfigError(f"{flag}: {what} lies below {d}, which is a file, not a folder; choose another path")
    try:  # os.access says yes to root even on a read-only mount or an immutable folder: try it
        tempfile.TemporaryFile(dir=d).close()
    except OSError as e:
        raise ConfigError(f"{flag}: cannot write into {d} ({e.strerror}); choose a writable path") from None


def check_output_file(flag: str, path: str) -> None:
    """`path` can be written as a file: not a folder, below a writable folder (created later, not now)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{flag}: {p} is a folder; give a file name, e.g. {p / 'vector.safetensors'}")
    _writable_dir(flag, _first_existing(p.parent if str(p.parent) else Path(".")), p)


def check_output_dir(flag: str, path: str) -> None:
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag}: {p} is a file; give a folder")
    _writable_dir(flag, _first_existing(p), p)


def check_methods(flag: str, names: list[str]) -> None:
    from ..core.methods import METHODS  # the registry (imports torch; still before any model loads)

    bad = [m for m in names if m not in METHODS]
    if bad:
        raise ConfigError(f"{flag}: unknown method(s) {', '.join(bad)}; valid: {', '.join(sorted(METHODS))}")


def check_common(flag: str, model_ids: list[str], device: str, threads: int) -> list:
    """Device, threads and every model id checked; returns each id's resolved `Source` (so a verb loads it without a
    second lookup: a hub id costs one request)."""
    from ..core.model.models import check_device, check_model_id

    sources = [check_model_id(m, flag) for m in model_ids]
    check_device(device)
    at_least("--threads", threads, 0)
    return sources


RAY_INSTALL = "pip install 'isokl[cluster]' (bash scripts/setup.sh installs it)"


def need_ray():
    """The ray module, or one ConfigError saying how to install it (config owns the check so that it imports nothing
    above it: cluster imports config, not the other way round)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray: Ray is not installed; install the optional extra: {RAY_INSTALL}") from None
    return ray


# ---- runtimes, vector files, scorers and dtypes: the checks the vector verbs share ----


def runtimes_of(spec: str, one: bool = False) -> list:
    """--runtime: known names (one, or a comma list) -> their `Runtime`s, each installed; else one ConfigError."""
    from ..core.runtimes import RUNTIMES, RuntimeMissing, get_runtime

    names = split(spec)
    if not names or any(n not in RUNTIMES for n in names) or len(set(names)) != len(names) or (one and len(names) > 1):
        want = "one of" if one else "one or more, comma-separated, of"
        raise ConfigError(f"--runtime: {spec!r}; valid: {want} {', '.join(RUNTIMES)}")
    out = []
    for n in names:
        try:
            out.append(get_runtime(n))
        except RuntimeMissing as e:
            raise ConfigError(f"--runtime {n}: {e}") from None
    return out


def check_runtimes(spec: str, gguf: str, one: bool = False) -> None:
    """--runtime's runtimes (`runtimes_of`); --gguf a file, only with a runtime that reads one."""
    from ..core.runtimes import RUNTIMES

    if gguf and not any(rt.reads_gguf for rt in runtimes_of(spec, one)):
        readers = ", ".join(rt.name for rt in RUNTIMES.values() if rt.reads_gguf)
        raise ConfigError(f"--gguf: only {readers} reads a GGUF model file; add --runtime {readers}")
    runtimes_of(spec, one)
    if gguf and not Path(gguf).expanduser().is_file():
        raise ConfigError(f"--gguf: {gguf} is not a file")


def check_served(spec: str, path_or_methods: str | list[str], flag: str = "--runtime") -> None:
    """A runtime of `spec` that only adds a fixed vector (llama.cpp) refuses a method whose rule reads the activation
    (`Runtime.accept`): the methods named, or a vector file's own (read without a model)."""
    from ..core.formats.interop import file_method
    from ..core.formats.tensors import VectorFileError

    try:
        methods = [file_method(path_or_methods)] if isinstance(path_or_methods, str) else path_or_methods
        for rt in runtimes_of(spec):
            for m in methods:
                rt.accept(m, f"{flag} {rt.name}")
    except (VectorFileError, ValueError) as e:
        raise ConfigError(str(e)) from None


def check_gguf_for(spec: str, gguf: str, model: str) -> None:
    """--gguf is required where a runtime that reads a GGUF file runs a `model` that is not bundled (a bundled one
    brings its own file)."""
    from ..core.model.bundled import BUNDLED

    readers = [rt.name for rt in runtimes_of(spec) if rt.reads_gguf]
    if readers and not gguf and model not in BUNDLED:
        raise ConfigError(f"--gguf: {model} is not a bundled model; give the GGUF file {readers[0]} serves it from")


_SCORERS: dict[str, dict] = {}


def load_scorers(spec: str, flag: str = "--scorer") -> dict:
    """'PATH.py:FUNCTION[,...]' -> {FUNCTION: the function}: each file imported as a module (trusted code: it runs
    here), once per spec. One ConfigError naming the flag for a missing file, a failed import, a missing name or one
    that is not callable."""
    if spec in _SCORERS:
        return _SCORERS[spec]
    import importlib.util

    out = {}
    for part in spec.split(","):
        file, sep, name = part.strip().rpartition(":")
        if not sep or not file.endswith(".py") or not name.isidentifier():
            raise ConfigError(f"{flag}: {part!r}; give PATH.py:FUNCTION (e.g. my_scorer.py:positivity)")
        if not Path(file).is_file():
            raise ConfigError(f"{flag}: {file} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"isokl_scorer_{Path(file).stem}", file)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:  # the user's file: any error it raises is reported in one line
            raise ConfigError(f"{flag}: importing {file} failed: {type(e).__name__}: {e}") from None
        fn = getattr(module, name, None)
        if not callable(fn):
            raise ConfigError(f"{flag}: {file} has no function {name!r}")
        if name in out:
            raise ConfigError(f"{flag}: two scorers named {name!r}; give each function its own name")
        out[name] = fn
    _SCORERS[spec] = out
    return out


def check_vector_file(flag: str, path: str) -> None:
    """Read and check a vector file before any model loads (an isokl file, or another tool's)."""
    from ..core.formats.interop import is_isokl_file
    from ..core.formats.tensors import read_layers
    from ..core.formats.vector import Vector

    if not Path(path).expanduser().is_file():
        raise ConfigError(f"{flag}: {path} does not exist or is not a file")
    try:
        Vector.load(path) if is_isokl_file(path) else read_layers(path)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None


VECTOR_DTYPE = "vector"
DTYPE_HELP = (
    "model weights: vector (the dtype the vector was calibrated in; float32 for files that do not say), float32 or "
    "bfloat16; another dtype is another model, whose KL at c* differs"
)


def weights_dtype(flag: str, calibrated_in: str, runtime: str = "") -> tuple[str, str]:
    """The one dtype policy of check and generate: a vector runs in the dtype it was calibrated in unless --dtype says
    otherwise -> (dtype, why: how the verbs print it)."""
    if flag != VECTOR_DTYPE:
        return flag, "--dtype"
    if calibrated_in in ("float32", "bfloat16"):
        return calibrated_in, "the vector's calibration dtype"
    if runtime:
        return "float32", f"calibrated in {runtime.split(' (')[0]}; float32 on the transformers side"
    return "float32", "the vector file does not say; float32"


def check_dtype(value: str) -> None:
    if value not in (VECTOR_DTYPE, "float32", "bfloat16"):
        raise ConfigError(f"--dtype: {value!r}; valid: {VECTOR_DTYPE}, float32, bfloat16")
