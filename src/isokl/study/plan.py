"""Plan: a sweep's flags (`config.SweepConfig`) resolved once -> a frozen record of the work (no torch).

`resolve` parses every list flag once, loads and checks the concept once, sizes the held-out
sets and the calibration draw once, and raises every `ConfigError` of a sweep in one place,
before any model loads or file is written. `sweep.run_sweep`, `sweep.CellRunner` and the
Ray driver (`cluster`) take the Plan and never parse a flag again; a Ray worker receives it
whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.concept import SETS, Concept, ConceptError
from .config import (
    CONCEPT_DEFAULT,
    QUICK,
    ConfigError,
    at_least,
    check_common,
    check_methods,
    check_output_dir,
    floats,
    ints,
    need_ray,
    split,
)

if TYPE_CHECKING:
    from .config import SweepConfig

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


def _windows(flag: str, value: str, windows: list[int]) -> list[int]:
    """A window list flag: '' = every --windows value, 'max' = the largest, else the numbers given."""
    return windows if not value else [max(windows)] if value == "max" else ints(flag, value, 1)


def _concept(cfg: SweepConfig) -> Concept:
    try:
        return Concept.load(cfg.concept)
    except ConceptError as e:
        raise ConfigError(f"--concept: {e}") from None


def _n_sets(cfg: SweepConfig, concept: Concept) -> dict[str, int]:
    """Prompts per held-out set. At the flag's default a set the concept has fewer of is used whole (a concept
    without probes: 0); a number given explicitly must fit."""
    ns = ints("--n-heldout", cfg.n_heldout, 1)
    if len(ns) not in (1, 3):
        raise ConfigError(f"--n-heldout: {cfg.n_heldout!r}; give N, or GENERIC,TRUEFALSE,SENTIMENT (e.g. 48,32,32)")
    ns = ns * 3 if len(ns) == 1 else ns
    sizes = concept.sizes()
    default = cfg.n_heldout in (type(cfg).__dataclass_fields__["n_heldout"].default, QUICK["n_heldout"])
    out = {}
    for name, n in zip(SETS, ns, strict=True):
        if sizes[name] == 0:
            out[name] = 0  # no probes: the target axis is not measured
        elif default:
            out[name] = min(n, sizes[name])
        elif n > sizes[name]:
            raise ConfigError(f"--n-heldout: {n} is outside 1..{sizes[name]} (the size of the {name} set of {cfg.concept})")
        else:
            out[name] = n
    return out


def calibration_n(n_calibration: int, concept: Concept) -> int:
    """Calibration prompts per seed: --n-calibration, else 4 (the spec) for the built-in default concept, 16 for any
    other (the library's default: c* about 3x tighter, docs/calibration.md). A domain rule, stated here once."""
    return n_calibration or (4 if concept.builtin and concept.name == CONCEPT_DEFAULT else 16)


def resolve(cfg: SweepConfig, models: bool = True) -> Plan:
    """The sweep's flags -> its Plan, or the first ConfigError (one line naming the flag). models=False leaves the
    model ids unresolved (a caller that brings its own loader knows them)."""
    model_ids, methods = split(cfg.models), split(cfg.methods)
    if not model_ids or not methods:
        raise ConfigError("--models and --methods need at least one name each")
    check_methods("--methods", methods)
    if cfg.control:
        check_methods("--control", [cfg.control])
        if cfg.control in methods:
            raise ConfigError(f"--control: {cfg.control} is also in --methods; a control is run beside the methods")
    windows = ints("--windows", cfg.windows, 1)
    control_windows = _windows("--control-windows", cfg.control_windows, windows)
    dose_windows = _windows("--dose-windows", cfg.dose_windows, windows)
    seeds = ints("--seeds", cfg.seeds, 0)
    alphas = floats("--alphas", cfg.alphas)
    if 1.0 not in alphas:
        raise ConfigError(f"--alphas: {cfg.alphas!r} lacks 1 (the calibrated dose c*, where held-out p95 is measured)")
    extra = floats("--dose-alphas", cfg.dose_alphas) if cfg.dose_alphas else ()
    at_least("--horizon", cfg.horizon, max(windows + control_windows))
    concept = _concept(cfg)
    try:
        concept.check_seeds(seeds)
    except ConceptError as e:
        raise ConfigError(str(e)) from None
    at_least("--n-calibration", cfg.n_calibration, 0)
    n_cal = calibration_n(cfg.n_calibration, concept)
    if not 2 <= n_cal <= len(concept.calibration_pool):
        raise ConfigError(
            f"--n-calibration: {n_cal} is outside 2..{len(concept.calibration_pool)} (the calibration prompts of {cfg.concept})"
        )
    n_heldout = _n_sets(cfg, concept)
    check_output_dir("--out", cfg.out)
    check_common("--models", model_ids if models else [], cfg.device, cfg.threads)
    if cfg.ray:
        need_ray()
        at_least("--cpus-per-cell", cfg.cpus_per_cell, 1)
        if cfg.gpus_per_cell < 0:
            raise ConfigError(f"--gpus-per-cell: {cfg.gpus_per_cell} is negative")
    cells = tuple(
        (m, meth, s, w)
        for m in model_ids
        for s in seeds
        for meth in methods + ([cfg.control] if cfg.control else [])
        for w in (control_windows if meth == cfg.control and cfg.control else windows)
    )
    return Plan(
        concept=concept,
        concept_arg=cfg.concept,
        models=tuple(model_ids),
        methods=tuple(methods),
        control=cfg.control,
        seeds=tuple(seeds),
        windows=tuple(windows),
        cells=cells,
        pmass_alphas=tuple(sorted(set(alphas))),
        dose_alphas=tuple(extra),
        dose_windows=tuple(dose_windows),
        n_heldout=n_heldout,
        n_calibration=n_cal,
        horizon=cfg.horizon,
        out=Path(cfg.out),
        device=cfg.device,
        recompute=cfg.recompute,
    )
