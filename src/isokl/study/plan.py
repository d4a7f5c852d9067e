"""Plan: a sweep's flags resolved once (`config.resolve`) -> a frozen record of the work (no torch).

`config.resolve` parses every list flag once, loads and checks the concept once, sizes the held-out
sets and the calibration draw once, and raises every `ConfigError` of a sweep in one place,
before any model loads or file is written. `sweep.run_sweep`, `sweep.CellRunner` and the
Ray driver (`cluster`) take the Plan and never parse a flag again; a Ray worker receives it
whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.formats.concept import Concept
from .flags import CONCEPT_DEFAULT

Cell = tuple[str, str, int, int]  # (model, method, seed, window)


@dataclass(frozen=True)
class Plan:
    """What a sweep will do, every choice made: the cells, each window's doses, the set sizes, the calibration draw."""

    concept: Concept
    concept_arg: str  # --concept as given (a folder's path or a built-in name): Ray workers and messages
    models: tuple[str, ...]
    methods: tuple[str, ...]
    control: str  # '' for none
    seeds: tuple[int, ...]
    windows: tuple[int, ...]  # the methods' calibration windows
    cells: tuple[Cell, ...]  # models x seeds x (methods at --windows, the control at its windows)
    pmass_alphas: tuple[float, ...]  # --alphas, ascending: every cell's doses, and those branch_pmass is measured at
    dose_alphas: tuple[float, ...]  # --dose-alphas: the dose-response's further doses
    dose_windows: tuple[int, ...]  # the windows whose cells get them
    n_heldout: dict[str, int]  # prompts per held-out set (`concept.SETS`)
    n_calibration: int  # calibration prompts per seed
    horizon: int
    out: Path
    device: str
    recompute: bool

    def alpha_values(self, window: int | None = None) -> tuple[float, ...]:
        """The doses of a cell of this window, ascending: --alphas, plus --dose-alphas where the window has them
        (None: every dose of the run, as the base rows' settings record)."""
        doses = set(self.pmass_alphas)
        if window is None or window in self.dose_windows:
            doses |= set(self.dose_alphas)
        return tuple(sorted(doses))


def calibration_n(n_calibration: int, concept: Concept) -> int:
    """Calibration prompts per seed: --n-calibration, else 4 (the spec) for the built-in default concept, 16 for any
    other (the library's default: c* about 3x tighter, docs/calibration.md). A domain rule, stated here once."""
    return n_calibration or (4 if concept.builtin and concept.name == CONCEPT_DEFAULT else 16)
