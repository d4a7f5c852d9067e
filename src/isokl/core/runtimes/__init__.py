"""Runtimes: where a dose is measured. `registry` holds one `Runtime` per runtime and the `Job` each solver runs as;
`hf` is transformers (rollouts in `rollout`), `served` is llama.cpp on the model's GGUF file (`llamacpp`: two
contexts in lockstep; `ggml`: the binding and control-vector files). Importing this package registers both.
"""

from . import hf, served  # noqa: F401  (importing them registers the runtimes)
from .hf import Round
from .registry import RUNTIMES, Job, Runtime, RuntimeMissing, get_runtime, register

__all__ = ["RUNTIMES", "Job", "Round", "Runtime", "RuntimeMissing", "get_runtime", "register"]
