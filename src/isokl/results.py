"""Results: what the library's verbs return (`api`), each a frozen value with a one-line repr and, in Jupyter, an
HTML view: `Grid` (calibrate), `CheckResult` (check), `Generation` and its `Continuation`s (generate). `Board`
(judge) is the leaderboard's, `report.leaderboard.Board`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from .core import show
from .core.calibrate import CalibrationResult
from .core.runtimes import Round
from .study import judge as _judge


@dataclass(frozen=True)
class Grid:
    """`calibrate`'s result: one CalibrationResult per vector (in order), the random-direction control of each layer set
    (`controls`, by layers; empty without controls) and the joint calibration's rounds, at one `budget` (the p95
    target, nats). Calibrated to several budgets (`calibrate(..., budgets=)`), `by_budget` holds each one's Grid."""

    results: tuple[CalibrationResult, ...]
    controls: dict[tuple[int, ...], CalibrationResult]
    rounds: tuple[Round, ...]
    seconds: float
    budget: float = 1.0
    others: dict[float, Grid] = field(default_factory=dict, repr=False)  # the other budgets' Grids

    @property
    def by_budget(self) -> dict[float, Grid]:
        """Every budget's Grid, this one included, in increasing budget."""
        return dict(sorted({self.budget: self, **self.others}.items()))

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[CalibrationResult]:
        return iter(self.results)

    def __getitem__(self, key: int | str) -> CalibrationResult:
        """By position, or by name `method@layers` (e.g. 'pca@12-17', as the judge names rows)."""
        if isinstance(key, int):
            return self.results[key]
        names = {_judge.name(r.vector): r for r in self.results}
        if key not in names:
            raise KeyError(f"{key!r}: this grid holds {', '.join(names)}")
        return names[key]

    def rows(self) -> list[tuple]:
        every = [*self.results, *self.controls.values()]
        return [
            (
                _judge.name(r.vector),
                f"{r.c_star:.5g}",
                f"[{r.c_interval.lo:.4g}, {r.c_interval.hi:.4g}]",
                f"{r.p95:.4f}",
                r.status,
                r.evaluations,
            )
            for r in every
        ]

    def __repr__(self) -> str:
        n = len(self.controls)
        ctrl = f" and {n} control{'s' if n > 1 else ''}" if n else ""
        conv = sum(r.converged for r in self.results)
        more = f"; also at {', '.join(f'{b:g}' for b in self.others)} nats" if self.others else ""
        return (
            f"Grid({len(self.results)} vectors{ctrl} at {self.budget:g} nat{'s' if self.budget != 1 else ''}: {conv} converged, "
            f"{len(self.rounds)} rounds, {self.seconds:.1f} s{more})"
        )

    def _repr_html_(self) -> str:
        return show.table(("vector", "c*", "interval", "p95", "status", "evaluations"), self.rows())


@dataclass(frozen=True)
class CheckResult:
    """A calibrated vector at alpha x c* on held-out prompts: the statistic, its interval and R1's verdict."""

    alpha: float
    c: float
    window: int  # T, tokens per prompt
    n_prompts: int
    p95: float  # pooled p95 per-token KL(steered || base), nats
    lo: float  # its 90% prompt-bootstrap interval
    hi: float
    max: float
    n_values: int  # scored tokens
    prompt_p95: tuple[float, ...]  # each prompt's own p95
    target: float  # the vector's calibration target
    band: tuple[float, float]  # R1's held-out band
    dtype: str  # the model's weights during the check (a llama.cpp check: the GGUF's quantization)
    runtime: str = "transformers"  # where the rollouts ran (a name of `core.runtimes.RUNTIMES`)
    weights: str = ""  # a runtime that reads a weights file (llama.cpp): the file (name, sha256 prefix, quantization)

    @property
    def in_band(self) -> bool:
        return self.band[0] <= self.p95 <= self.band[1]

    @property
    def interval_overlaps_band(self) -> bool:
        return self.lo <= self.band[1] and self.hi >= self.band[0]

    @property
    def above_target(self) -> int:
        """Prompts whose own p95 exceeds the target."""
        return sum(v > self.target for v in self.prompt_p95 if not math.isnan(v))

    @property
    def verdict(self) -> str:
        """'IN BAND' or 'OUT OF BAND', and whether the interval overlaps the band when outside."""
        if self.in_band:
            return "IN BAND"
        return "OUT OF BAND" + (
            " (its interval overlaps the band)" if self.interval_overlaps_band else " (its interval misses the band)"
        )

    def __repr__(self) -> str:
        return (
            f"CheckResult({self.verdict}: p95 = {self.p95:.4f} [{self.lo:.3f}, {self.hi:.3f}] at alpha {self.alpha:g} "
            f"(c = {self.c:.5g}) on {self.n_prompts} prompts, T = {self.window}, band {list(self.band)}"
            + (f", in {self.runtime} on {self.weights})" if self.weights else ")")
        )

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.in_band else "#b00"
        head = f'<p style="font:600 14px system-ui,sans-serif;color:{colour}">{html.escape(self.verdict)} {list(self.band)} (R1\'s held-out band)</p>'
        rows = [
            ("p95", f"{self.p95:.4f} [{self.lo:.3f}, {self.hi:.3f}] (90% prompt-bootstrap interval; target {self.target:g})"),
            ("dose", f"alpha {self.alpha:g}, c = {self.c:.6g}"),
            ("prompts", f"{self.n_prompts} x T = {self.window} ({self.n_values} tokens scored), {self.dtype}"),
            ("runtime", f"{self.runtime} on {self.weights}" if self.weights else f"{self.runtime}, {self.dtype}"),
            ("max", f"{self.max:.3f} nats; prompts whose own p95 exceeds {self.target:g}: {self.above_target}/{self.n_prompts}"),
        ]
        return head + show.table(("", ""), rows)


@dataclass(frozen=True)
class Continuation:
    """One greedy continuation: its text, each token's text (`pieces`, joined = text) and KL(steered || base) per
    token (empty for the base model)."""

    alpha: float
    c: float
    text: str
    pieces: tuple[str, ...]
    kl: tuple[float, ...]
    p95: float = math.nan  # pooled over its tokens (nan for the base model)
    max: float = math.nan


@dataclass(frozen=True)
class Generation:
    """`generate`'s result: per prompt, the base model's continuation and one per dose."""

    prompts: tuple[str, ...]
    vector: str  # its label
    c_star: float
    base: tuple[Continuation, ...]  # [prompt]
    steered: tuple[tuple[Continuation, ...], ...]  # [prompt][dose]

    def __repr__(self) -> str:
        doses = ", ".join(f"{c.alpha:g}" for c in self.steered[0]) if self.steered else ""
        n = len(self.prompts)
        return f"Generation({self.vector}, c* = {self.c_star:.5g}: {n} prompt{'s' if n > 1 else ''} at alpha 0, {doses})"

    def _repr_html_(self) -> str:
        out = [show.legend()]
        for prompt, base, doses in zip(self.prompts, self.base, self.steered, strict=True):
            rows = [f"<b>{html.escape(prompt)}</b>", f"<div><i>alpha 0 (base model)</i><br>{html.escape(base.text)}</div>"]
            for d in doses:
                head = f"alpha {d.alpha:g} (c = {d.c:.4g}): p95 KL {d.p95:.3f}, max {d.max:.3f} nats over {len(d.kl)} tokens"
                rows.append(f"<div><i>{head}</i><br>{show.tokens_html(d.pieces, d.kl)}</div>")
            out.append('<div style="margin:8px 0;font:13px system-ui,sans-serif">' + "".join(rows) + "</div>")
        return "".join(out)
