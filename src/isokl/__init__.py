"""isokl: iso-KL calibrated activation steering.

    vec = isokl.extract((model, tok), [("I love it", "I hate it"), ...], "mean_diff")   # the model you loaded
    res = isokl.calibrate_iso_kl((model, tok), vec, ["Tell me about your weekend.", ...])  # c*, interval, p95
    with isokl.steer(model, res): model.generate(...)                                   # at c* (alpha=2: twice)
    isokl.check((model, tok), res, other_prompts)                                        # held-out p95, R1's verdict
    isokl.generate((model, tok), res, "Hello")                                           # base and steered, KL per token
    grid = isokl.calibrate(lm, [vec_a, vec_b], prompts, controls=True)                  # jointly, with random floors
    board = isokl.judge(lm, grid)                                                        # effect, damage, floor
    lm = isokl.load("smollm2-135m")   # or isokl.LM.wrap(model, tok); any verb takes {12: t} or another tool's vector

The front door holds what a notebook needs, each name one job (docs/usage.md lists exactly these). Layers (imports
only go down): `core` (stats, methods, model, formats, runtimes; extract, calibrate) -> `study` -> `report` (no torch)
-> `api`, `cli`. docs/architecture.md has the picture. Attributes load lazily, so `isokl.report` runs where torch is
not installed; names of the previous release still work, with a DeprecationWarning (`deprecated`).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {  # module -> the names it gives `isokl.NAME`, imported on first use
    "api": ("CheckResult", "Grid", "calibrate", "check", "generate", "judge", "steer"),
    "core.calibrate": ("CalibrationResult", "calibrate_iso_kl"),
    "core.extract": ("extract",),
    "core.formats.concept": ("Concept",),
    "core.formats.vector": ("Vector",),
    "core.model.models": ("LM", "load"),
    "report.leaderboard": ("Board",),
}
_LAZY = {name: (mod, name) for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(import_module(f".{mod}", __name__), attr)
    from .deprecated import NAMES, warn

    if name in NAMES:
        mod, attr, instead = NAMES[name]
        warn(f"isokl.{name}", instead)
        m = import_module(f".{mod}", __name__)
        return getattr(m, attr) if attr else m
    raise AttributeError(f"module 'isokl' has no attribute {name!r}")


def __dir__():
    return sorted([*__all__, "__version__"])
