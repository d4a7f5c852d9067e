"""Command line: `isokl VERB --help`. calibrate, check, generate, export, sweep and study take their flags from a
typed config dataclass (`isokl.study.config`); report, methods and models take a folder or nothing.

  isokl calibrate --concept examples/concepts/refusal --method pca --window 20 --out v.safetensors
  isokl calibrate --method mean_diff,pca --layers 6-11/12-17 --out grid   # a grid, calibrated jointly
  isokl check v.safetensors --prompts my_prompts.txt     # held-out p95 on your prompts, R1's verdict
  isokl generate --vector v.safetensors --prompt "Tell me about your weekend."
  isokl study --out results/v2       # the study: sweep + Figures 1-2, Table 1, claims.md
  isokl study --concept DIR --quick  # the quick protocol on your concept, into runs/quick
  isokl report results/v2            # rebuild figures, table and claims from the CSVs alone

Bad input ends in one line naming the flag, before any model loads (`--debug` shows the traceback). Nothing here imports
torch until a verb needs it, so `isokl --help` and `isokl report` start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_type_hints

from . import __version__
from .cli_calibrate import check_prompts, cmd_calibrate
from .cli_calibrate import use_threads as _threads
from .study.config import ReportConfig, StudyConfig, SweepConfig, default_out
from .study.flags import ConfigError, check_gguf_for, floats, runtimes_of, split, weights_dtype
from .study.records import span
from .study.verbs import (
    CalibrateConfig,
    CheckConfig,
    ExportConfig,
    GenerateConfig,
)


class Parser(argparse.ArgumentParser):
    """One-line errors, and no abbreviated flags: `--window` is not taken for `--windows` (a preset such as --quick
    must see every flag the user gave by its full name)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_config_args(p: argparse.ArgumentParser, cfg_cls) -> None:
    hints = get_type_hints(cfg_cls)
    for f in dataclasses.fields(cfg_cls):
        typ, flag, help_ = hints[f.name], f"--{f.name.replace('_', '-')}", f.metadata.get("help", "")
        if f.metadata.get("positional"):
            p.add_argument(f.name, help=help_)
        elif typ is bool:
            p.add_argument(flag, action="store_true", help=help_)
        elif "nargs" in f.metadata:
            p.add_argument(flag, nargs=f.metadata["nargs"], const=f.metadata["const"], default=f.default, help=help_)
        else:
            p.add_argument(
                flag,
                type=typ if typ in (int, float, str) else str,
                default=f.default,
                help=f"{help_} (default: {f.default})" if f.default != "" else help_,
            )


def given_flags(argv: list[str], cfg_cls) -> set[str]:
    """The config fields whose flags appear on the command line (a preset must not override them)."""
    flags = {f"--{f.name.replace('_', '-')}": f.name for f in dataclasses.fields(cfg_cls)}
    return {flags[a.split("=")[0]] for a in argv if a.split("=")[0] in flags}


def to_config(args: argparse.Namespace, cfg_cls):
    return cfg_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cfg_cls)})


def calibrated_any(path: str, flag: str):
    """`calibrated`, or an isokl-exported GGUF control vector -> (the vector, or None for a GGUF: rebuilt once the
    model it names is loaded; its calibration; its model id; its isokl fields)."""
    if Path(path).suffix.lower() != ".gguf":
        vec, cal = calibrated(path, flag)
        return vec, cal, vec.model_id, {}
    from .core.formats.gguf import gguf_fields, gguf_meta
    from .core.formats.tensors import VectorFileError

    try:
        fields = gguf_fields(path)
        if not fields:
            raise ConfigError(
                f"{flag}: {path} carries no isokl fields (another tool's control vector: its dose is unknown); "
                "calibrate it with `isokl calibrate --vector FILE`"
            )
        meta, cal, _ = gguf_meta(path, fields)
    except VectorFileError as e:
        raise ConfigError(f"{flag}: {e}") from None
    return None, cal, str(meta["model_id"]), fields


def calibrated(path: str, flag: str):
    """A saved vector and its calibration; an uncalibrated file is one line saying how to make one."""
    from .core.formats.vector import Vector

    vec = Vector.load(path)
    if vec.calibration is None:
        raise ConfigError(f"{flag}: {path} is not calibrated; make one with `isokl calibrate --out FILE`")
    return vec, vec.calibration


def cmd_check(cfg: CheckConfig) -> int:
    """A calibrated vector on the user's prompts (`isokl.check`): held-out p95 at alpha x c* with its interval and
    R1's verdict, printed, in each --runtime on the same prompts; exit 0 in band (every runtime), 2 outside."""
    cfg.check()
    from .api import check
    from .core.formats.concept import read_prompts
    from .core.model.models import check_model_id, load

    vec, cal, model_id, fields = calibrated_any(cfg.vector, "vector")
    check_gguf_for(cfg.runtime, cfg.gguf, model_id)  # a model that is not bundled needs --gguf: said before it loads
    source = check_model_id(model_id)  # resolved once
    prompts, _ = read_prompts(cfg.prompts)
    T = cfg.window or cal.window
    threads = _threads(cfg.threads)
    dtypes = list(dict.fromkeys(weights_dtype(d, cal.dtype, cal.runtime) for d in split(cfg.dtype)))
    import torch

    lms: dict = {}

    def lm_in(dtype: str):
        if dtype not in lms:
            lms[dtype] = load(source, device=cfg.device, dtype=getattr(torch, dtype))
        return lms[dtype]

    lm = lm_in(dtypes[0][0])
    if vec is None:  # an isokl-exported GGUF: its fields checked against this model (id, fingerprints)
        from .core.formats.gguf import from_isokl_gguf

        vec = from_isokl_gguf(lm, Path(cfg.vector), fields)
    vec.check_fits(lm.id, lm.n_layers, lm.d_model)
    check_prompts(lm, prompts, T, cfg.prompts, "--prompts")
    print(
        f"vector: {vec.method} on {vec.model_id}, layers {span(vec.layers)}, c* = {vec.coeff:.6g} (p95 {cal.p95:.3f} at "
        f"T = {cal.window} on {cal.n_prompts} calibration prompts, {cal.status}"
        + (f"; calibrated in {cal.runtime} on {cal.weights}" if cal.runtime else "")
        + ")"
    )
    runs = [  # (what to print, the dtype whose LM runs it, runtime): a torch runtime once per --dtype
        (f"{rt.name} {d} ({why})" if rt.torch_dtype else "", d, rt.name)
        for rt in runtimes_of(cfg.runtime)
        for d, why in (dtypes if rt.torch_dtype else dtypes[:1])
    ]
    results = []
    for label, d, runtime in runs:
        t0 = time.time()
        res = check(lm_in(d), vec, prompts, T=T, alpha=cfg.alpha, runtime=runtime, gguf=cfg.gguf or None)
        results.append((label or f"{runtime} on {res.weights}", res, time.time() - t0))
    label, r, secs = results[0]
    if len(results) == 1:
        print(
            f"checked at alpha {cfg.alpha:g} (c = {r.c:.6g}) on {len(prompts)} prompts of {cfg.prompts}, T = {T}; "
            + label.removeprefix("transformers ")
        )
        print(f"p95 = {r.p95:.4f}  [{r.lo:.3f}, {r.hi:.3f}]: 90% prompt-bootstrap interval (target {cal.target:g})")
        band_lo, band_hi = r.band
        overlap = (
            ""
            if r.in_band
            else (" (its interval overlaps the band)" if r.interval_overlaps_band else " (its interval misses the band)")
        )
        print(f"verdict = {'IN BAND' if r.in_band else 'OUT OF BAND'} [{band_lo}, {band_hi}] (R1's held-out band){overlap}")
        print(
            f"max = {r.max:.3f} nats over {r.n_values} tokens; prompts whose own p95 exceeds {cal.target:g}: "
            f"{r.above_target}/{len(prompts)}"
        )
        print(f"seconds = {secs:.1f} (model load not included; {threads} threads)")
        return 0 if r.in_band else 2
    print(f"checked at alpha {cfg.alpha:g} (c = {r.c:.6g}) on {len(prompts)} prompts of {cfg.prompts}, T = {T}, side by side:")
    w = max(len(label) for label, _, _ in results)
    print(f"  {'runtime':<{w}}  {'p95':>6}  {'90% interval':<16} {'max':>6}  {'seconds':>7}  verdict {list(r.band)}")
    for label, res, secs in results:
        print(f"  {label:<{w}}  {res.p95:6.4f}  [{res.lo:.3f}, {res.hi:.3f}]   {res.max:6.3f}  {secs:7.1f}  {res.verdict}")
    print(f"({threads} threads; model load not included)")
    return 0 if all(res.in_band for _, res, _ in results) else 2


def cmd_export(cfg: ExportConfig) -> int:
    cfg.check()
    from .core.formats.gguf import export
    from .core.formats.vector import Vector

    vec = Vector.load(cfg.vector)
    path = export(vec, cfg.format, cfg.out, cfg.alpha)
    print(
        f"wrote {path}: {vec.method} on {vec.model_id}, layers {vec.layers[0]}..{vec.layers[-1]}, c = {cfg.alpha:g} x c* "
        f"= {cfg.alpha * vec.coeff:.6g} baked in ({cfg.format})"
    )
    return 0


def cmd_generate(cfg: GenerateConfig) -> int:
    given = cfg.check()  # --model resolved once, if given
    from .core.model.models import check_model_id

    vec, cal = calibrated(cfg.vector, "--vector")
    model_id = cfg.model or vec.model_id
    source = given or check_model_id(model_id)  # the one resolution: load and the shape reuse it
    shape = source.shape()
    if shape:  # before the weights load
        try:
            vec.check_shape(model_id, *shape)
        except ValueError as e:
            raise ConfigError(f"--model: {e}") from None
    if model_id != vec.model_id:
        if not cfg.allow_other_model:
            raise ConfigError(
                f"--model: {cfg.vector} was fitted on {vec.model_id}, not {model_id}; add --allow-other-model "
                "to apply it there on purpose (its c* was calibrated on the other model)"
            )
        vec = vec.for_model(model_id)
    threads = _threads(cfg.threads)
    from .api import generate
    from .core.model.models import load

    dtype, why = weights_dtype(cfg.dtype, cal.dtype, cal.runtime)
    import torch

    lm = load(source, device=cfg.device, dtype=getattr(torch, dtype))
    vec.check_fits(lm.id, lm.n_layers, lm.d_model)
    alphas = floats("--alpha", cfg.alpha)
    t0 = time.time()
    gen = generate(lm, vec, cfg.prompt, alphas=alphas, T=cfg.tokens)
    print(f"prompt: {cfg.prompt}")
    print(
        f"vector: {vec.method} on {vec.model_id}, c* = {cal.coeff:.6g} (p95 KL {cal.p95:.3f} at T = {cal.window}, {cal.status}); "
        f"{dtype} ({why})\n"
    )
    print(f"--- alpha 0 (base model)\n{gen.base[0].text}\n")
    for d in gen.steered[0]:
        print(f"--- alpha {d.alpha:g} (c = {d.c:.4g}): p95 KL {d.p95:.3f}, max {d.max:.3f} nats over {len(d.kl)} tokens")
        print(d.text)
        print("KL per token: " + " ".join(f"{x:.2f}" for x in d.kl) + "\n")
    print(f"[isokl] generated in {time.time() - t0:.1f} s ({threads} threads)", file=sys.stderr)
    return 0


def cmd_sweep(cfg: SweepConfig) -> int:
    return _sweep(cfg, cfg.resolve())


def _sweep(cfg: SweepConfig, plan) -> int:
    """The resolved sweep, serial or on Ray (the Plan: every flag parsed once)."""
    t0 = time.time()
    if cfg.ray:
        from .study.cluster import run_sweep_ray

        out, failed = run_sweep_ray(plan, cfg.ray, cfg.cpus_per_cell, cfg.gpus_per_cell)
        if failed:
            for name, err in failed.items():
                print(f"failed: {name}: {err}", file=sys.stderr)
            print(f"sweep incomplete in {time.time() - t0:.0f} s: {len(failed)} cells failed; the rest is in {out}/")
            return 1
    else:
        _threads(cfg.threads)
        from .study.sweep import run_sweep

        out = run_sweep(plan)
    print(f"sweep done in {time.time() - t0:.0f} s: {out}/")
    return 0


def cmd_study(cfg: SweepConfig) -> int:
    """The main job: the sweep, then the report; prints the verdicts in short and where the files are."""
    plan = cfg.resolve()
    if _sweep(cfg, plan):
        return 1
    from .report.build import build, summary

    built = build(plan.out, expected_cells=len(plan.cells))
    print("\n".join(summary(built.claims)))
    print("files: " + ", ".join(str(p) for p in built.paths))
    return 0


def cmd_methods() -> int:
    from .core.methods import METHODS

    for name, m in sorted(METHODS.items()):
        doc = (sys.modules[type(m).__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:22s} {doc.removeprefix(name + ':').strip()}")
    return 0


def cmd_models() -> int:
    from .core.model.models import BUNDLED

    for b in BUNDLED.values():
        print(f"{b.id:22s} {'chat' if b.chat else 'base (plain-text prompts)':26s} packages: {', '.join(b.pip_names)}")
    return 0


STUDY_DOC = (
    "The full study (Study v2 protocol, docs/decisions.md): sweep, then the figures, Table 1 and claims.md (resumable; "
    "default folder runs/study)."
)


def cmd_report(cfg: ReportConfig) -> int:
    cfg.check()
    from .report.build import run

    return run(cfg.dir, cfg.expected_cells or None)


# verb -> (its config dataclass, or None for a verb without flags; the command; the help line). The one map of the CLI.
VERBS: dict[str, tuple[type | None, Callable[..., int], str | None]] = {
    "calibrate": (CalibrateConfig, cmd_calibrate, CalibrateConfig.__doc__),
    "check": (CheckConfig, cmd_check, CheckConfig.__doc__),
    "generate": (GenerateConfig, cmd_generate, GenerateConfig.__doc__),
    "export": (ExportConfig, cmd_export, ExportConfig.__doc__),
    "sweep": (SweepConfig, cmd_sweep, f"{SweepConfig.__doc__} Default folder runs/sweep."),
    "study": (StudyConfig, cmd_study, STUDY_DOC),
    "report": (ReportConfig, cmd_report, ReportConfig.__doc__),
    "methods": (None, cmd_methods, "List the registered steering methods."),
    "models": (None, cmd_models, "List the bundled (offline) models and their packages."),
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="isokl", description="Iso-KL calibrated activation steering: every method dosed to the same per-token KL.")
    p.add_argument("--version", action="version", version=f"isokl {__version__}")
    p.add_argument("--verbose", action="store_true", help="also show the model loader's progress bars")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback instead of one line")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)
    for verb, (cls, _, doc) in VERBS.items():
        sp = sub.add_parser(verb, help=doc, description=doc)
        if cls is not None:
            add_config_args(sp, cls)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["ISOKL_VERBOSE"] = "1"
    cls, cmd, _ = VERBS[args.verb]
    try:
        if cls is None:
            return cmd()
        cfg = to_config(args, cls)
        if isinstance(cfg, StudyConfig):
            cfg.apply_quick(given_flags(argv if argv is not None else sys.argv[1:], StudyConfig))
        if isinstance(cfg, SweepConfig):
            cfg.out = cfg.out or default_out(args.verb, getattr(cfg, "quick", False))
        return cmd(cfg)
    except KeyboardInterrupt as e:
        print(f"isokl: {e}" if str(e) else "isokl: interrupted; nothing was saved", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FloatingPointError) as e:  # our messages say what to do; no traceback for bad input
        if args.debug:
            raise
        print(f"isokl: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
