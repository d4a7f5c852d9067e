"""Deprecated: the names and keywords of the previous release, kept working for one release with a
DeprecationWarning that says what replaces each (CHANGELOG.md, "Renamed"). Nothing here computes anything."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

# isokl.NAME that left the front door -> (module, attribute, what to use instead)
NAMES: dict[str, tuple[str, str, str]] = {
    "wrap": ("core.model.models", "wrap", "isokl.LM.wrap(model, tokenizer), or pass (model, tokenizer) to any verb"),
    "calibrate_many": ("core.calibrate", "calibrate_many", "isokl.calibrate(lm, vectors, prompts): one or many vectors"),
    "solve": ("core.stats.solver", "solve", "isokl.core.stats.solver.solve"),
    "evaluate": ("core.runtimes.rollout", "evaluate", "isokl.check(lm, vector, prompts, alpha=...) for a calibrated vector"),
    "METHODS": ("core.methods", "METHODS", "isokl.core.methods.METHODS (or `isokl methods`)"),
    "get_method": ("core.methods", "get_method", "isokl.core.methods.get_method"),
    "BUNDLED": ("core.model.bundled", "BUNDLED", "isokl.core.model.bundled.BUNDLED (or `isokl models`)"),
    "prompts": ("core.model.prompts", "", "calibrate_iso_kl(..., add_library_prompts=N), or isokl.core.model.prompts"),
    "JointCalibration": ("core.calibrate", "JointCalibration", "isokl.calibrate, which returns a Grid"),
    "Calibration": ("core.formats.vector", "Calibration", "vector.calibration (isokl.core.formats.vector.Calibration)"),
    "Generation": ("api", "Generation", "what isokl.generate returns (isokl.api.Generation)"),
}


def warn(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and goes in the next release: use {new}", DeprecationWarning, stacklevel=3)


def renamed(*positional: str, **old_to_new: str) -> Callable:
    """A verb's keywords of the previous release -> today's, each with a DeprecationWarning. positional: names that
    were positional after the verb's first three arguments (lm, vector, prompts) and are keyword-only now. Where the
    old and the new keyword are both given, the new one stands (an old `verbose=` beside `progress=` was overruled by
    it then too)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def verb(*args: Any, **kw: Any) -> Any:
            if len(args) > 3 and positional:
                extra = args[3:]
                if len(extra) > len(positional):
                    raise TypeError(f"{fn.__name__}() takes 3 positional arguments (lm, vector, prompts)")
                names = [old_to_new.get(p, p) for p in positional[: len(extra)]]
                warn(
                    f"isokl.{fn.__name__}'s positional {', '.join(positional[: len(extra)])}",
                    f"{', '.join(n + '=' for n in names)}",
                )
                for n, v in zip(names, extra, strict=True):
                    if n in kw:
                        raise TypeError(f"{fn.__name__}() got {n} twice (positionally and as {n}=)")
                    kw[n] = v
                args = args[:3]
            for old, new in old_to_new.items():
                if old in kw:
                    value = kw.pop(old)
                    warn(f"isokl.{fn.__name__}({old}=)", f"{new}=")
                    kw.setdefault(new, value)
            return fn(*args, **kw)

        return verb

    return wrap
