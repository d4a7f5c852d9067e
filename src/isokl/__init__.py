"""isokl: iso-KL calibrated activation steering.

    lm = isokl.load("smollm2-135m")
    vec = isokl.extract(lm, isokl.prompts.extraction_pairs(seed=0), "mean_diff")
    res = isokl.calibrate_iso_kl(lm, vec, isokl.prompts.calibration_prompts(seed=0), T=20)
    with isokl.steer(lm.model, res.vector, res.c_star): ...

Data flow (one module each): prompts -> activations -> methods -> vector -> hooks ->
rollout (KL) -> calibrate -> metrics -> sweep (CSV) -> report (figure, table, claims).
Attributes load lazily, so `isokl.report` runs where torch is not installed.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "prompts": ("prompts", None),
    "extract": ("activations", "extract"),
    "CalibrationResult": ("calibrate", "CalibrationResult"),
    "calibrate_iso_kl": ("calibrate", "calibrate_iso_kl"),
    "solve": ("calibrate", "solve"),
    "steer": ("hooks", "steer"),
    "METHODS": ("methods", "METHODS"),
    "get_method": ("methods", "get_method"),
    "BUNDLED": ("models", "BUNDLED"),
    "LM": ("models", "LM"),
    "load": ("models", "load"),
    "evaluate": ("rollout", "evaluate"),
    "Calibration": ("vector", "Calibration"),
    "Vector": ("vector", "Vector"),
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'isokl' has no attribute {name!r}")
    mod, attr = _LAZY[name]
    m = import_module(f".{mod}", __name__)
    return m if attr is None else getattr(m, attr)
