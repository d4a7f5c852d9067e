"""Registry: where a dose can be measured. One `Runtime` value per runtime (transformers, llama.cpp), looked up by
name (`get_runtime`); what a runtime can do is one of its fields, so no verb compares runtime names.

A runtime does two things for the verbs: `solve` runs calibration `Job`s (one vector's solver each, `stats.solver`)
to their end with every evaluation's rollouts and KL measured there, and `measure` gives one vector's KL statistics at
alpha x c* on prompts. Adding a runtime = one module that builds its `Runtime` and calls `register`, plus its name in
the import line of `runtimes/__init__.py` (docs/architecture.md, "A new runtime").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..formats.vector import Vector
from ..methods import require_fixed_vector
from ..stats.kl import KLStats
from ..stats.solver import Solve, solver


class RuntimeMissing(ImportError):
    """A runtime's package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Runtime:
    """One runtime. The fields a verb asks instead of comparing names:

    fixed_vectors_only: it adds h + c v for any vector (a control vector), so it refuses a method whose rule reads the
    activation (`Method.fixed_vector`); reads_gguf: it runs the model's GGUF file (`--gguf`; a bundled model brings
    its own); judged: the judge's readings (transformers forwards of the same weights) apply to its doses;
    torch_dtype: the model's torch dtype is what runs (a check runs once per --dtype there, once elsewhere).
    installed() raises RuntimeMissing naming what to install. solve(lm, jobs, seqs, T, *, stop, report, draft, gguf,
    sample) -> (the fields each Calibration records, the rounds run); measure(lm, vector, seqs, T, alpha, *, gguf,
    sample) -> (KLStats at alpha x c*, the weights' dtype or quantization, the weights file or '')."""

    name: str
    summary: str
    installed: Callable[[], None]
    solve: Callable[..., tuple[dict[str, str], list]]
    measure: Callable[..., tuple[KLStats, str, str]]
    fixed_vectors_only: bool = False
    reads_gguf: bool = False
    judged: bool = False
    torch_dtype: bool = False

    def accept(self, method: str, where: str = "") -> None:
        """One line where this runtime cannot apply `method`'s rule (before anything runs); `where` names the flag."""
        if self.fixed_vectors_only:
            require_fixed_vector(method, where or f'runtime="{self.name}"')


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    RUNTIMES[runtime.name] = runtime
    return runtime


def get_runtime(name: str) -> Runtime:
    """The runtime of that name, its package installed; else one line (the valid names, or how to install it)."""
    if name not in RUNTIMES:
        raise ValueError(f"runtime: {name!r}; valid: {', '.join(RUNTIMES)}")
    rt = RUNTIMES[name]
    rt.installed()
    return rt


class Job:
    """One vector's solver inside a joint calibration: its pending doses, evaluated stats and rollouts (for drafts).
    A runtime's `solve` evaluates `pending`, records each dose's `stats` (and `tokens` where it drafts), then `tell`s
    the solver the p95 values in order, until `pending` is empty; `fail` ends it with a message."""

    def __init__(self, vector: Vector, c0: float, c_max: float, known: tuple[KLStats, ...] = ()):
        """known: this vector's evaluations for another target (`calibrate.calibrate_budgets`): its solver reads them
        first (the complete ones) and they lead its history without counting as its evaluations."""
        self.vector, self.c0, self.c_max = vector, c0, c_max
        self.stats: dict[float, KLStats] = {s.c: s for s in known}
        self.n_known = sum(s.complete for s in known)
        self.tokens: dict[float, tuple[torch.Tensor, int]] = {}  # c -> (steered tokens [n T], steps generated)
        self.pending: list[float] = []
        self.solve: Solve | None = None
        self.error = ""
        self.finished = math.nan  # time.time() when its solver ended

    def start(self, **options: Any) -> None:
        known = [(c, s.p95) for c, s in self.stats.items() if s.complete]  # a stopped rollout's p95 is only a bound
        self._rounds = solver(c0=self.c0, c_max=self.c_max, known=known, **options)
        try:
            self.pending = next(self._rounds)
        except StopIteration as end:  # a known point already lies in the band
            self.solve, self.pending, self.finished = end.value, [], time.time()

    def tell(self, values: list[float]) -> None:
        try:
            self.pending = self._rounds.send(values)
        except StopIteration as end:
            self.solve, self.pending, self.finished = end.value, [], time.time()

    def fail(self, error: str) -> None:
        self._rounds.close()
        self.error, self.pending, self.finished = error, [], time.time()
