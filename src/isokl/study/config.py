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
from ..core.concept import Concept, ConceptError, read_prompts
from .records import STUDY_METHODS, STUDY_MODELS, STUDY_SEEDS, STUDY_WINDOWS, TARGET, TOL

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


@dataclass
class CalibrateConfig:
    """Calibrate a steering vector to p95 KL = target and save it: one extracted from seeded contrast pairs, or one
    from a file (--vector)."""

    model: str = field(default="smollm2-135m", metadata={"help": "bundled id, local folder or Hugging Face id"})
    method: str = field(
        default="mean_diff",
        metadata={"help": "steering method (see `isokl methods`); several, comma-separated, calibrate a grid jointly"},
    )
    window: int = field(default=20, metadata={"help": "T, generated tokens per calibration rollout"})
    seed: int = field(default=0, metadata={"help": "draws the 4 contrast pairs and the calibration prompts"})
    n_prompts: int = field(
        default=16, metadata={"help": "calibration prompts (the study uses the spec's 4; 16 pin c* about 3x tighter)"}
    )
    target: float = field(default=TARGET, metadata={"help": "p95 per-token KL target, nats"})
    tol: float = field(default=TOL, metadata={"help": "converged when |p95 - target| <= tol"})
    out: str = field(
        default="vector.safetensors",
        metadata={
            "help": "where to save the calibrated vector; a grid (several methods or layer sets): a folder (default grid/)"
        },
    )
    vector: str = field(
        default="",
        metadata={
            "help": "calibrate this vector file instead of extracting one (isokl .safetensors, llama.cpp/repeng "
            ".gguf, steering-vectors .pt, a {layer: tensor} .safetensors/.pt)"
        },
    )
    concept: str = field(
        default="",
        metadata={
            "help": "a concept folder (docs/concepts.md) or built-in name: its seed's contrast pairs and calibration "
            "prompts (default: the built-in sentiment pairs and the library's calibration prompts)"
        },
    )
    pairs: str = field(
        default="",
        metadata={"help": "a pairs.jsonl file alone (as a concept folder holding only it): the seed draws 4 of its pairs"},
    )
    prompts: str = field(
        default="",
        metadata={
            "help": "calibrate on every prompt of this file: JSONL (user, optional system, assistant_prefix, id) or "
            "plain text, one prompt per line (overrides --n-prompts)"
        },
    )
    layers: str = field(
        default="",
        metadata={
            "help": "steered layers: 10-20 (inclusive), 10,12,14, or a band of depth 0.25-0.75 (default: 0.25-0.75); "
            "several sets separated by / (e.g. 6-11/12-17/18-23) calibrate a grid jointly"
        },
    )
    start: float = field(default=0.0, metadata={"help": "first coefficient to try, e.g. a c* from another window (0: guess)"})
    per_round: int = field(default=1, metadata={"help": "coefficients per batched solver round (1 on CPU; 4 pays on a GPU)"})
    no_judge: bool = field(
        default=False,
        metadata={"help": "skip the judge (held-out effect, damage and a random-direction floor of every vector)"},
    )
    alphas: str = field(default="1", metadata={"help": "the judge's doses alpha = c / c*, comma-separated"})
    pmass: bool = field(default=False, metadata={"help": "the judge also measures branch_pmass (its forks are the slowest)"})
    horizon: int = field(default=QUICK["horizon"], metadata={"help": "the judge's held-out rollout length (at least --window)"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda"})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "model weights: float32, bfloat16, or auto (float32 on CPU, bfloat16 on a GPU); bfloat16 is a "
            "different model: its c* differs (docs/calibration.md)"
        },
    )
    threads: int = field(default=0, metadata={"help": THREADS_HELP})

    def load_concept(self) -> Concept:
        """The concept the pairs (and calibration prompts) come from: --concept, --pairs as a one-file concept, or the
        built-in default."""
        if "_concept" not in self.__dict__:
            flag, src = ("--pairs", self.pairs) if self.pairs else ("--concept", self.concept or CONCEPT_DEFAULT)
            try:
                self.__dict__["_concept"] = Concept.from_pairs_file(src) if self.pairs else Concept.load(src)
            except ConceptError as e:
                raise ConfigError(f"{flag}: {e}") from None
        return self.__dict__["_concept"]

    def calibration_prompts(self) -> list:
        """--prompts FILE whole, else the seed's --n-prompts draw from the concept's calibration pool."""
        if self.prompts:
            try:
                return read_prompts(self.prompts)[0]
            except ConceptError as e:
                raise ConfigError(f"--prompts: {e}") from None
        return self.load_concept().calibration(self.seed, self.n_calibration_prompts())

    def n_calibration_prompts(self) -> int:
        """--n-prompts; at its default, a concept with fewer calibration prompts gives all of them."""
        default = type(self).__dataclass_fields__["n_prompts"].default
        pool = len(self.load_concept().calibration_pool)
        return min(self.n_prompts, pool) if self.n_prompts == default and pool >= 2 else self.n_prompts

    def methods(self) -> list[str]:
        return split(self.method)

    def judging(self) -> bool:
        """The judge runs unless --no-judge; a vector file (--vector) has no concept to judge it against."""
        return not self.no_judge and not self.vector

    def layer_sets(self) -> list[str]:
        """--layers split into its sets ('' = the default band)."""
        return [x.strip() for x in self.layers.replace(";", "/").split("/")] if self.layers else [""]

    def grid(self) -> list[tuple[str, str]]:
        """(method, layer spec) of every vector to calibrate, methods outer."""
        return [(m, spec) for m in self.methods() for spec in self.layer_sets()]

    def out_dir(self) -> Path:
        """A grid's folder: --out, or grid/ where --out is left at its default file name."""
        default = type(self).__dataclass_fields__["out"].default
        return Path("grid" if self.out == default else self.out).expanduser()

    def torch_dtype(self):
        import torch

        name = self.dtype if self.dtype != "auto" else ("float32" if self.device == "cpu" else "bfloat16")
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]

    def check(self):
        """Every flag, in one line on the first bad one; returns the --model's resolved Source."""
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"--dtype: {self.dtype!r}; valid: auto, float32, bfloat16")
        check_methods("--method", self.methods())
        at_least("--window", self.window, 1)
        at_least("--seed", self.seed, 0)
        if len(set(self.grid())) != len(self.grid()):
            raise ConfigError(f"--method/--layers: a grid point repeats ({self.method} x {self.layers})")
        if self.concept and self.pairs:
            raise ConfigError("--pairs: give either --concept DIR or --pairs FILE, not both")
        if self.vector and (self.concept or self.pairs):
            raise ConfigError("--vector: a vector file brings its own direction; drop --concept/--pairs (keep --prompts)")
        if self.vector and len(self.methods()) > 1:
            raise ConfigError("--method: a vector file brings its own method; give one vector file and no method list")
        if self.layers:
            if self.vector:
                raise ConfigError("--layers: a vector file brings its own layers; drop --layers")
            for spec in self.layer_sets():
                layers("--layers", spec)
        concept = self.load_concept()
        pool = len(concept.calibration_pool)
        if not self.prompts and not 2 <= self.n_calibration_prompts() <= pool:
            raise ConfigError(f"--n-prompts: {self.n_prompts} is outside 2..{pool} (the calibration prompts of {concept.source})")
        self.calibration_prompts()
        at_least("--per-round", self.per_round, 1)
        if self.judging():
            floats("--alphas", self.alphas)
            at_least("--horizon", self.horizon, self.window)
            if "random_direction" in self.methods():
                raise ConfigError(
                    "--method: random_direction is the judge's control (one per layer set); drop it, or add --no-judge"
                )
        floats("--target", str(self.target))
        floats("--tol", str(self.tol))
        if self.tol >= self.target:
            raise ConfigError(f"--tol: {self.tol} must be smaller than --target {self.target}")
        if self.start < 0:
            raise ConfigError(f"--start: {self.start} is negative; give a coefficient > 0, or 0 to let isokl guess")
        if len(self.grid()) > 1:
            if self.start:
                raise ConfigError("--start: the vectors of a grid have their own scales; drop --start (each guesses its own)")
            if self.out_dir().suffix == ".safetensors":
                raise ConfigError(
                    f"--out: a grid of {len(self.grid())} vectors is written to a folder; give --out DIR, not {self.out}"
                )
            check_output_dir("--out", str(self.out_dir()))
        else:
            check_output_file("--out", self.out)
        if self.vector:
            check_vector_file("--vector", self.vector)
        return check_common("--model", [self.model], self.device, self.threads)[0]


RAY_INSTALL = "pip install 'isokl[cluster]' (bash scripts/setup.sh installs it)"


def need_ray():
    """The ray module, or one ConfigError saying how to install it (config owns the check so that it imports nothing
    above it: cluster imports config, not the other way round)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray: Ray is not installed; install the optional extra: {RAY_INSTALL}") from None
    return ray


def check_vector_file(flag: str, path: str) -> None:
    """Read and check a vector file before any model loads (an isokl file, or another tool's)."""
    from ..core.interop import is_isokl_file, read_layers
    from ..core.vector import Vector

    if not Path(path).expanduser().is_file():
        raise ConfigError(f"{flag}: {path} does not exist or is not a file")
    try:
        Vector.load(path) if is_isokl_file(path) else read_layers(path)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None


VECTOR_DTYPE = "vector"
DTYPE_HELP = (
    "model weights: vector (the dtype the vector was calibrated in; float32 for files that do not say), float32 or "
    "bfloat16; another dtype is another model, whose KL at c* differs"
)


def weights_dtype(flag: str, calibrated_in: str) -> tuple[str, str]:
    """The one dtype policy of check and generate: a vector runs in the dtype it was calibrated in unless --dtype says
    otherwise -> (dtype, why: how the verbs print it)."""
    if flag != VECTOR_DTYPE:
        return flag, "--dtype"
    if calibrated_in in ("float32", "bfloat16"):
        return calibrated_in, "the vector's calibration dtype"
    return "float32", "the vector file does not say; float32"


def check_dtype(value: str) -> None:
    if value not in (VECTOR_DTYPE, "float32", "bfloat16"):
        raise ConfigError(f"--dtype: {value!r}; valid: {VECTOR_DTYPE}, float32, bfloat16")


@dataclass
class CheckConfig:
    """Check a calibrated vector on your own prompts: held-out p95 per-token KL at c* with its prompt-bootstrap
    interval, the verdict against R1's band [0.7, 1.4], the max and the share of prompts above the target (C1 for one
    vector). Exit code 0 in band, 2 outside."""

    vector: str = field(default="", metadata={"help": "a calibrated vector file (from `isokl calibrate`)", "positional": True})
    prompts: str = field(
        default="",
        metadata={"help": "held-out prompts: JSONL (user, optional system, assistant_prefix, id) or plain text, one per line"},
    )
    window: int = field(default=0, metadata={"help": "T, generated tokens per prompt (0: the vector's calibration window)"})
    alpha: float = field(default=1.0, metadata={"help": "dose multiple alpha = c / c* to check"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    dtype: str = field(default=VECTOR_DTYPE, metadata={"help": DTYPE_HELP})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})

    def check(self) -> None:
        if not self.vector or not Path(self.vector).expanduser().is_file():
            raise ConfigError(f"vector: {self.vector!r} does not exist or is not a file; give a file from `isokl calibrate`")
        if not self.prompts:
            raise ConfigError("--prompts: required, e.g. --prompts my_prompts.txt (one prompt per line, or JSONL)")
        try:
            ps = read_prompts(self.prompts)[0]
        except ConceptError as e:
            raise ConfigError(f"--prompts: {e}") from None
        if len(ps) < 2:
            raise ConfigError(f"--prompts: {self.prompts} has {len(ps)} prompt; the interval needs at least 2")
        at_least("--window", self.window, 0)
        floats("--alpha", str(self.alpha))
        check_dtype(self.dtype)
        check_common("--model", [], self.device, self.threads)


@dataclass
class ExportConfig:
    """Write a calibrated vector for another tool, with c* x alpha baked in (llama.cpp --control-vector, repeng,
    steering-vectors); only additive rules can be exported."""

    vector: str = field(default="", metadata={"help": "a calibrated isokl vector file", "positional": True})
    format: str = field(
        default="gguf", metadata={"help": "gguf (llama.cpp control vector), repeng (its GGUF), steering-vectors (.pt)"}
    )
    out: str = field(default="", metadata={"help": "the file to write, e.g. vector.gguf"})
    alpha: float = field(default=1.0, metadata={"help": "dose multiple alpha = c / c* baked into the file"})

    def check(self) -> None:
        from ..core.interop import FORMATS

        if self.format not in FORMATS:
            raise ConfigError(f"--format: {self.format!r}; valid: {', '.join(FORMATS)}")
        if not self.out:
            raise ConfigError("--out: required, e.g. --out vector.gguf")
        floats("--alpha", str(self.alpha))
        check_output_file("--out", self.out)
        if not Path(self.vector).expanduser().is_file():
            raise ConfigError(f"vector: {self.vector!r} does not exist or is not a file")


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
class GenerateConfig:
    """Greedy continuations of a prompt: the base model and the model steered by a saved vector, with per-token KL."""

    vector: str = field(default="", metadata={"help": "a calibrated vector file (from `isokl calibrate`)"})
    prompt: str = field(default="", metadata={"help": "the user message (the model's chat template is applied)"})
    alpha: str = field(default="1,2", metadata={"help": "comma-separated dose multiples alpha = c / c*"})
    tokens: int = field(default=60, metadata={"help": "tokens to generate"})
    model: str = field(default="", metadata={"help": "model to steer (default: the one the vector was fitted on)"})
    allow_other_model: bool = field(default=False, metadata={"help": "apply a vector fitted on another model of the same shape"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    dtype: str = field(default=VECTOR_DTYPE, metadata={"help": DTYPE_HELP})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})

    def check(self):
        """Every flag, in one line on the first bad one; returns --model's resolved Source (None: the vector's model)."""
        if not self.vector:
            raise ConfigError("--vector: required; give a file written by `isokl calibrate --out FILE`")
        if not Path(self.vector).expanduser().is_file():
            raise ConfigError(f"--vector: {self.vector} does not exist or is not a file")
        if not self.prompt.strip():
            raise ConfigError("--prompt: required; give the text to continue, e.g. --prompt 'Tell me about your day.'")
        floats("--alpha", self.alpha)
        at_least("--tokens", self.tokens, 1)
        check_dtype(self.dtype)
        sources = check_common("--model", [self.model] if self.model else [], self.device, self.threads)
        return sources[0] if sources else None


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
