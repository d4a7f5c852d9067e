"""Config: the typed settings of every command-line verb -> checked values, before any model loads (no torch).

Each verb's flags are derived from its dataclass (`cli.add_config_args`). `check()` turns
bad input into one `ConfigError` line that names the flag and what to do; it writes
nothing and loads no model, so a mistake costs a second, not a calibration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.formats.concept import SETS, Concept, ConceptError
from .flags import (
    CONCEPT_DEFAULT,
    QUICK,
    THREADS_HELP,
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
from .plan import Plan, calibration_n
from .records import STUDY_METHODS, STUDY_MODELS, STUDY_SEEDS, STUDY_WINDOWS


@dataclass
class SweepConfig:
    """Run the grid models x methods x seeds x windows and write tidy CSVs (resumes where it stopped)."""

    models: str = field(default=",".join(STUDY_MODELS), metadata={"help": "comma-separated model ids"})
    methods: str = field(default=",".join(STUDY_METHODS), metadata={"help": "comma-separated methods"})
    seeds: str = field(default=",".join(map(str, STUDY_SEEDS)), metadata={"help": "comma-separated data seeds"})
    windows: str = field(default=",".join(map(str, STUDY_WINDOWS)), metadata={"help": "comma-separated calibration windows T"})
    alphas: str = field(
        default="1,2", metadata={"help": "dose multiples alpha = c / c* measured besides 0 by every metric (must include 1)"}
    )
    dose_alphas: str = field(
        default="", metadata={"help": "further doses for the dose-response (KL, base NLL, target logit; not pmass)"}
    )
    dose_windows: str = field(
        default="", metadata={"help": "windows whose cells get --dose-alphas: '' every window, 'max' the largest, or a list"}
    )
    control: str = field(
        default="",
        metadata={"help": "a control method run per model and seed beside --methods, e.g. random_direction ('' for none)"},
    )
    control_windows: str = field(
        default="", metadata={"help": "windows of the control cells: '' every window, 'max' the largest, or a list"}
    )
    n_heldout: str = field(
        default="16",
        metadata={"help": "prompts per held-out set: N for all three, or GENERIC,TRUEFALSE,SENTIMENT (e.g. 48,32,32)"},
    )
    concept: str = field(
        default=CONCEPT_DEFAULT,
        metadata={"help": "a concept folder (docs/concepts.md) or a built-in concept's name"},
    )
    n_calibration: int = field(
        default=0,
        metadata={
            "help": "calibration prompts per seed (0: the spec's 4 for the built-in sentiment concept, the library's 16 "
            "for any other concept)"
        },
    )
    horizon: int = field(default=50, metadata={"help": "tokens per held-out rollout (fork points 0, 5, ..., horizon)"})
    out: str = field(
        default="", metadata={"help": "output folder (default: runs/<verb>; the published results/ only when named)"}
    )
    device: str = field(default="cpu", metadata={"help": "torch device"})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    recompute: bool = field(
        default=False, metadata={"help": "recompute finished cells whose recorded settings differ from this run's"}
    )
    ray: str = field(
        default="",
        metadata={
            "help": "run the cells on Ray: --ray starts a local cluster, --ray auto joins a running one, --ray HOST:PORT "
            "that one (optional extra isokl[cluster])",
            "nargs": "?",
            "const": "local",
        },
    )
    cpus_per_cell: int = field(default=1, metadata={"help": "with --ray: CPUs (and torch threads) per cell"})
    gpus_per_cell: float = field(default=0.0, metadata={"help": "with --ray: GPUs per cell (e.g. 1, or 0.5 to share one)"})

    def resolve(self, models: bool = True) -> Plan:
        """Every flag parsed and checked once -> the sweep's `plan.Plan` (every ConfigError of a sweep is raised there).
        models=False: leave the model ids unchecked (a caller that brings its own loader knows them)."""
        return resolve(self, models)

    def check(self, models: bool = True) -> None:
        """The flags' checks alone (`resolve`, its Plan dropped)."""
        self.resolve(models)


def _sweep_field(name: str, default: str):
    """A SweepConfig field with the study's default: the same flag and the same help (declared once, in SweepConfig)."""
    return field(default=default, metadata=SweepConfig.__dataclass_fields__[name].metadata)


@dataclass
class StudyConfig(SweepConfig):
    """The study (Study v2, docs/decisions.md): the sweep with the larger held-out sets, the dose-response on the T = 50
    cells and a random-direction control, then Figure 1, Figure 2, Table 1 and claims.md."""

    n_heldout: str = _sweep_field("n_heldout", "64,32,32")
    dose_alphas: str = _sweep_field("dose_alphas", "0.25,0.5,1.5,3,4")
    dose_windows: str = _sweep_field("dose_windows", "max")
    control: str = _sweep_field("control", "random_direction")
    control_windows: str = _sweep_field("control_windows", "max")
    quick: bool = field(
        default=False,
        metadata={
            "help": "the quick protocol (QUICK in isokl.study.config): smollm2-135m, T = 20, smaller held-out sets, into "
            "runs/quick; flags given explicitly still win"
        },
    )

    def apply_quick(self, given: set[str]) -> None:
        """--quick: set each field of `QUICK` the command line did not give."""
        if self.quick:
            for name, value in QUICK.items():
                if name not in given:
                    setattr(self, name, value)


@dataclass
class ReportConfig:
    """Rebuild Figure 1, Figure 2, Table 1, claims.md and examples.md from a sweep folder's CSVs alone (no torch)."""

    dir: str = field(
        default="", metadata={"help": "folder written by `isokl sweep` or `isokl study` (e.g. results/v2)", "positional": True}
    )
    expected_cells: int = field(
        default=0, metadata={"help": "mark the report INCOMPLETE below this many cells (0: its own grid)"}
    )

    def check(self) -> None:
        at_least("--expected-cells", self.expected_cells, 0)


def default_out(verb: str, quick: bool = False) -> str:
    """Fresh run folders under runs/ (git-ignored): a default never writes into the published results/."""
    return os.path.join("runs", "quick" if quick else verb)


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
