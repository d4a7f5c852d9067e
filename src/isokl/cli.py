"""Command line: `isokl VERB --help`. Each verb's flags are derived from a typed config dataclass.

  isokl calibrate --model smollm2-135m --method mean_diff --window 20 --seed 0 --out v.safetensors
  isokl study --out results          # the full study: sweep + Figure 1, Table 1, claims.md
  isokl study --quick --out quick    # one model (smollm2-135m)
  isokl report results               # rebuild figure, table and claims from the CSVs alone
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints


@dataclass
class CalibrateConfig:
    """Extract a steering vector from seeded contrast pairs, calibrate it to p95 KL = target, save it."""

    model: str = field(default="smollm2-135m", metadata={"help": "bundled id, local folder or Hugging Face id"})
    method: str = field(default="mean_diff", metadata={"help": "steering method (see `isokl methods`)"})
    window: int = field(default=20, metadata={"help": "T, generated tokens per calibration rollout"})
    seed: int = field(default=0, metadata={"help": "draws the 4 contrast pairs and the 4 calibration prompts"})
    target: float = field(default=1.0, metadata={"help": "p95 per-token KL target, nats"})
    tol: float = field(default=0.05, metadata={"help": "converged when |p95 - target| <= tol"})
    out: str = field(default="vector.safetensors", metadata={"help": "where to save the calibrated vector"})
    start: float = field(default=0.0, metadata={"help": "first coefficient to try, e.g. a c* from another window (0: guess)"})
    doses_per_round: int = field(default=1, metadata={"help": "doses per batched solver round (1 on CPU; 4 pays on a GPU)"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda"})


def add_config_args(p: argparse.ArgumentParser, cfg_cls) -> None:
    hints = get_type_hints(cfg_cls)
    for f in dataclasses.fields(cfg_cls):
        typ = hints[f.name]
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=typ if typ in (int, float, str) else str,
            default=f.default,
            help=f"{f.metadata.get('help', '')} (default: {f.default})",
        )


def to_config(args: argparse.Namespace, cfg_cls):
    return cfg_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cfg_cls)})


def cmd_calibrate(cfg: CalibrateConfig) -> int:
    from . import prompts
    from .activations import extract
    from .calibrate import calibrate_iso_kl
    from .methods import get_method
    from .models import load

    get_method(cfg.method)  # fail before loading a model
    t0 = time.time()
    lm = load(cfg.model, device=cfg.device)
    vec = extract(lm, prompts.extraction_pairs(cfg.seed), cfg.method)
    print(f"[isokl] calibrating {cfg.method} on {cfg.model}, layers {vec.layers[0]}..{vec.layers[-1]}, T = {cfg.window}", file=sys.stderr)
    res = calibrate_iso_kl(lm, vec, prompts.calibration_prompts(cfg.seed), T=cfg.window, target=cfg.target, tol=cfg.tol,
                           per_round=cfg.doses_per_round, start=cfg.start or None)
    path = res.vector.save(cfg.out)
    print(f"c* = {res.c_star:.6g}")
    print(f"p95 = {res.p95:.4f} (target {cfg.target} +- {cfg.tol})")
    print(f"converged = {str(res.converged).lower()} ({res.status})")
    print(f"evaluations = {res.evaluations}")
    print(f"seconds = {time.time() - t0:.1f}")
    print(f"saved {path}")
    if not res.converged:
        why = {
            "unreachable": "even the largest coefficient tried stays below the target: this method cannot move the model that far",
            "not_converged": "p95 jumps across the target (a greedy token flips) or the solver ran out of evaluations",
        }[res.status]
        print(f"[isokl] NOT CONVERGED: {why}; the saved vector records status {res.status!r}", file=sys.stderr)
        return 2
    return 0


def cmd_sweep(cfg) -> int:
    from .sweep import run_sweep

    t0 = time.time()
    out = run_sweep(cfg)
    print(f"sweep done in {time.time() - t0:.0f} s: {out}/")
    return 0


def cmd_study(cfg) -> int:
    """The main job: the sweep, then the report."""
    from .report import build

    cmd_sweep(cfg)
    for p in build(cfg.out, expected_cells=len(cfg.grid())):
        print(p)
    print((Path(cfg.out) / "claims.md").read_text())
    return 0


def cmd_methods(_args) -> int:
    from .methods import METHODS

    for name, m in sorted(METHODS.items()):
        doc = (sys.modules[type(m).__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:22s} {doc}")
    return 0


def cmd_models(_args) -> int:
    from .models import BUNDLED

    for b in BUNDLED.values():
        print(f"{b.id:22s} {'chat' if b.chat else 'base (plain-text prompts)':26s} packages: {', '.join(b.pip_names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isokl", description="Iso-KL calibrated activation steering.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = sub.add_parser("calibrate", help=CalibrateConfig.__doc__, description=CalibrateConfig.__doc__)
    add_config_args(c, CalibrateConfig)
    from .sweep import SweepConfig

    for verb, doc in (("sweep", SweepConfig.__doc__), ("study", "The full study: sweep, then Figure 1, Table 1 and claims.md (resumable).")):
        sp = sub.add_parser(verb, help=doc, description=doc)
        add_config_args(sp, SweepConfig)
        sp.add_argument("--quick", action="store_true", help="one model (smollm2-135m): the quick preset")
    rp = sub.add_parser("report", help="rebuild Figure 1, Table 1 and claims.md from a sweep folder (no torch)")
    rp.add_argument("dir")
    rp.add_argument("--expected-cells", type=int, default=None, help="mark the report INCOMPLETE below this many cells")
    sub.add_parser("methods", help="list the steering methods")
    sub.add_parser("models", help="list the bundled models")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "calibrate":
            return cmd_calibrate(to_config(args, CalibrateConfig))
        if args.verb in ("sweep", "study"):
            from .sweep import SweepConfig

            cfg = to_config(args, SweepConfig)
            if args.quick:
                cfg.models = "smollm2-135m"
            return (cmd_sweep if args.verb == "sweep" else cmd_study)(cfg)
        if args.verb == "report":
            from .report import main as report_main

            return report_main([args.dir] + (["--expected-cells", str(args.expected_cells)] if args.expected_cells else []))
        if args.verb == "methods":
            return cmd_methods(args)
        if args.verb == "models":
            return cmd_models(args)
    except (ValueError, RuntimeError, FloatingPointError) as e:  # our messages say what to do; no traceback for bad input
        print(f"isokl: error: {e}", file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
