"""Config: the typed settings of every command-line verb -> checked values, before any model loads (no torch).

Each verb's flags are derived from its dataclass (`cli.add_config_args`). `check()` turns
bad input into one `ConfigError` line that names the flag and what to do; it writes
nothing and loads no model, so a mistake costs a second, not a calibration.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.concept import DEFAULT as CONCEPT_DEFAULT
from .records import STUDY_METHODS, STUDY_MODELS, STUDY_SEEDS, STUDY_WINDOWS

if TYPE_CHECKING:
    from .plan import Plan

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
        from ..core.hooks import default_layers  # the one band-of-depth rule (torch: only once a depth is known)

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
    from ..core.models import check_device, check_model_id

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
        from .plan import resolve

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
