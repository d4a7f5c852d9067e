"""Verbs: the typed flags of the vector verbs (calibrate, check, export, generate), each a dataclass whose fields are
the CLI's flags and whose `check()` refuses bad input in one line before any model loads (no torch). The shared
grammar (layer specs, number lists, output paths, runtimes, vector files) is in `flags`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.formats.concept import DEFAULT as CONCEPT_DEFAULT
from ..core.formats.concept import Concept, ConceptError, read_prompts
from .flags import (
    DTYPE_HELP,
    QUICK,
    THREADS_HELP,
    VECTOR_DTYPE,
    ConfigError,
    at_least,
    check_common,
    check_dtype,
    check_gguf_for,
    check_methods,
    check_output_dir,
    check_output_file,
    check_runtimes,
    check_served,
    check_vector_file,
    floats,
    layers,
    load_scorers,
    runtimes_of,
    split,
)
from .records import TARGET, TOL

GGUF_HELP = "llama.cpp's model file (default: a bundled model's own GGUF; required for any other model)"


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
    budgets: str = field(
        default="",
        metadata={
            "help": "a grid at several budgets, nats of p95 per-token KL, comma-separated (e.g. 0.5,1,2): every vector "
            "calibrated and judged at each, the frontier drawn (default: --target alone, 1)"
        },
    )
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
    scorer: str = field(
        default="",
        metadata={
            "help": "your own ruler(s) for the judge, PATH.py:FUNCTION[,PATH2.py:FUNCTION2]: a function text -> float, a "
            "column each (shift against the base text, beyond the control); trusted code: the file runs in this process"
        },
    )
    rank_by: str = field(
        default="",
        metadata={
            "help": "the judge's ranking reading: concept, question, delta_logit or a --scorer function's name "
            "(default: the first the concept has of the order docs/concepts.md gives)"
        },
    )
    heldout: int = field(default=0, metadata={"help": "the judge's held-out prompts (0: the default, 24)"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda"})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "model weights: float32, bfloat16, or auto (float32 on CPU, bfloat16 on a GPU); bfloat16 is a "
            "different model: its c* differs (docs/calibration.md)"
        },
    )
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    runtime: str = field(
        default="transformers",
        metadata={
            "help": "where the calibration's rollouts run: transformers, or llama.cpp on the model's GGUF file (c* of "
            "the quantized model as served; the judge is skipped there: it measures in transformers)"
        },
    )
    gguf: str = field(default="", metadata={"help": GGUF_HELP})

    def scorers(self) -> dict:
        """--scorer's functions by name (each file imported once; one line for a missing file or function)."""
        return load_scorers(self.scorer) if self.scorer else {}

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

    def budget_list(self) -> tuple[float, ...]:
        """--budgets as numbers (nats), each > 0 and given once; --target alone where --budgets is not given."""
        if not self.budgets:
            return (float(self.target),)
        levels = floats("--budgets", self.budgets)
        bad = [b for b in levels if b <= 0]
        if bad:
            raise ConfigError(f"--budgets: {bad[0]:g}; a budget is a p95 per-token KL in nats, a number > 0")
        twice = [b for i, b in enumerate(levels) if b in levels[:i]]
        if twice:
            raise ConfigError(f"--budgets: {twice[0]:g} is given twice; give each budget once")
        return tuple(levels)

    def judging(self) -> bool:
        """The judge runs unless --no-judge; a vector file (--vector) has no concept to judge it against; it measures
        in transformers, so --runtime llama.cpp skips it."""
        return not self.no_judge and not self.vector and runtimes_of(self.runtime, one=True)[0].judged

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
        check_runtimes(self.runtime, self.gguf, one=True)
        check_gguf_for(self.runtime, self.gguf, self.model)
        check_methods("--method", self.methods())
        if not self.vector:
            check_served(self.runtime, self.methods())
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
            names = list(self.scorers())
            valid = ("concept", "question", "delta_logit", *names)
            if self.rank_by not in ("", *valid):
                raise ConfigError(f"--rank-by: {self.rank_by!r}; valid: {', '.join(valid)}")
            if self.rank_by in ("question", "delta_logit") and not concept.has_reading(self.rank_by):
                lack = (
                    "asks no question (concept.json, docs/concepts.md)"
                    if self.rank_by == "question"
                    else "has no probes.jsonl and words.json"
                )
                raise ConfigError(f"--rank-by {self.rank_by}: {concept.source} {lack}")
            if self.heldout:
                at_least("--heldout", self.heldout, 2)
                if self.heldout > len(concept.heldout_pool):
                    raise ConfigError(
                        f"--heldout: {self.heldout}; {concept.source} has {len(concept.heldout_pool)} held-out prompts"
                    )
        elif self.scorer or self.rank_by or self.heldout:
            raise ConfigError("--scorer/--rank-by/--heldout: they are the judge's; drop them or drop --no-judge")
        floats("--target", str(self.target))
        floats("--tol", str(self.tol))
        if self.budgets:
            levels = self.budget_list()
            if self.target != TARGET:
                raise ConfigError("--budgets: give --budgets or --target, not both")
            if len(levels) > 1 and len(self.grid()) < 2:
                raise ConfigError("--budgets: several budgets need a grid folder (several --method or --layers sets)")
            if min(levels) <= self.tol:
                raise ConfigError(f"--budgets: {min(levels):g} is not above --tol {self.tol:g}")
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
            check_served(self.runtime, self.vector)
        return check_common("--model", [self.model], self.device, self.threads)[0]


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
    dtype: str = field(
        default=VECTOR_DTYPE, metadata={"help": DTYPE_HELP + "; several, comma-separated, check in each side by side"}
    )
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    runtime: str = field(
        default="transformers",
        metadata={
            "help": "where to measure: transformers (at --dtype), llama.cpp (the exported control vector on the "
            "model's GGUF file), or both, comma-separated, on the same prompts side by side"
        },
    )
    gguf: str = field(default="", metadata={"help": GGUF_HELP})

    def check(self) -> None:
        check_runtimes(self.runtime, self.gguf)
        if not self.vector or not Path(self.vector).expanduser().is_file():
            raise ConfigError(f"vector: {self.vector!r} does not exist or is not a file; give a file from `isokl calibrate`")
        check_served(self.runtime, self.vector)
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
        for d in split(self.dtype) or [""]:
            check_dtype(d)
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
        from ..core.formats.gguf import FORMATS

        if self.format not in FORMATS:
            raise ConfigError(f"--format: {self.format!r}; valid: {', '.join(FORMATS)}")
        if not self.out:
            raise ConfigError("--out: required, e.g. --out vector.gguf")
        floats("--alpha", str(self.alpha))
        check_output_file("--out", self.out)
        if not Path(self.vector).expanduser().is_file():
            raise ConfigError(f"vector: {self.vector!r} does not exist or is not a file")
        from ..core.formats.interop import file_method
        from ..core.formats.tensors import VectorFileError
        from ..core.methods import require_fixed_vector

        try:
            require_fixed_vector(file_method(self.vector), f"--format {self.format}")
        except (VectorFileError, ValueError) as e:
            raise ConfigError(str(e)) from None


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
