"""Models: a short id, a Hugging Face id or a local folder (resolved once, `bundled.resolve`) -> `LM` (model,
tokenizer, prompt format), plus the forward helpers every pass uses and torch's threads.

The bundled models' packaging lives in `bundled`; base and steered runs use the same dequantized
weights, so quantization biases no KL.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# BUNDLED, ModelPackageMissing and check_model_id are re-exported: callers know them from here
from .bundled import (  # noqa: F401  (ModelPackageMissing: raised to callers from load)
    BUNDLED,
    ModelPackageMissing,
    Source,
    _log,
    bundled_id,
    check_model_id,
    check_transformers,
    resolve,
)
from .prompts import Prompt

# A transformers causal LM (PreTrainedModel) and its tokenizer. Typed loosely: torch's Module typing reads
# every attribute (model.config, ...) as Tensor | Module, and tokenizers are duck-typed across backends.
Model = Any
Tokenizer = Any

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

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, *, id: str | None = None, chat: bool | None = None) -> LM:
        """Your loaded Hugging Face causal LM and its tokenizer as an LM (`models.wrap`: nothing copied or cast)."""
        return wrap(model, tokenizer, id=id, chat=chat)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:  # short: never the tokenizer's vocabulary
        p = next(self.model.parameters())
        fmt = "chat template" if self.chat else "plain-text prompts"
        return (
            f"LM({self.id}: {type(self.model).__name__}, {self.n_layers} layers x {self.d_model}, {p.dtype}, {p.device}, {fmt})"
        )

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


def _what(x: Any) -> str:
    text = repr(x)
    return f"{type(x).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def wrap(model: Any, tokenizer: Any, *, id: str | None = None, chat: bool | None = None) -> LM:
    """A Hugging Face causal LM and its tokenizer, loaded by you -> `LM`. Nothing is copied or cast: the model keeps its
    device and dtype (it is put in eval mode: greedy rollouts need dropout off). id: the name vectors record (default
    the bundled id for a bundled model's folder, else the model's `name_or_path`); chat: use the tokenizer's chat template (default: when it has one)."""
    if not hasattr(model, "config") or not callable(getattr(model, "get_output_embeddings", None)):
        raise ValueError(f"wrap: the model must be a transformers causal LM, got {_what(model)}")
    if not callable(tokenizer):
        raise ValueError(f"wrap: the tokenizer must be a transformers tokenizer, got {_what(tokenizer)}")
    path = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", ""))
    bundled = bundled_id(path)
    if bundled is not None:
        check_transformers(BUNDLED[bundled])  # a bundled GGUF this transformers reads wrong is refused here too
    name = id or bundled or path or type(model).__name__
    return from_module(model, tokenizer, id=name, chat=chat)


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


def load(model: str | Source = DEFAULT_MODEL, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LM:
    """Load a bundled id, a local folder or a Hugging Face id (the latter needs network access or a cached copy);
    a `Source` (`resolve`) loads without resolving its id again."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = model if isinstance(model, Source) else resolve(model)
    check_device(str(device))
    if not os.environ.get("ISOKL_VERBOSE"):
        hf_logging.disable_progress_bar()  # the loader's weight bars: `isokl --verbose` shows them
    chat = source.bundled.chat if source.bundled is not None else None
    where = source.folder()
    t0 = time.time()
    try:
        tok = AutoTokenizer.from_pretrained(where)
        hf: Model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except OSError as e:
        raise RuntimeError(f"could not load {source.id!r}: {e}") from e
    hf.to(device)
    lm = from_module(
        hf, tok, id=source.id, chat=chat, column_product=torch.device(device).type == "cpu" and dtype == torch.float32
    )
    _log(
        f"loaded {source.id} ({lm.n_layers} layers x {lm.d_model}) in {time.time() - t0:.1f} s, {torch.get_num_threads()} threads"
    )
    return lm


# ---- fingerprints: which model a vector belongs to beyond its id ----


def tokenizer_fingerprint(lm: LM) -> str:
    vocab = sorted(lm.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def weights_fingerprint(lm: LM) -> str:
    emb = lm.model.get_input_embeddings().weight.detach()[::97].to("cpu", torch.bfloat16).contiguous()
    return hashlib.sha256(emb.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


def fingerprints(lm: LM) -> dict[str, str]:
    """{tokenizer_sha, weights_sha} of `lm` (Calibration's fields), computed once per LM: the tokenizer's vocabulary,
    and the token-embedding matrix (every 97th row, rounded to bfloat16, so a float32 and a bfloat16 load agree)."""
    if "fingerprints" not in lm.meta:
        lm.meta["fingerprints"] = {"tokenizer_sha": tokenizer_fingerprint(lm), "weights_sha": weights_fingerprint(lm)}
    return dict(lm.meta["fingerprints"])
