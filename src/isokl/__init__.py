"""isokl: iso-KL calibrated activation steering.

    lm = isokl.load("smollm2-135m")
    concept = isokl.Concept.load("sentiment")             # or a folder of your own (docs/concepts.md)
    vec = isokl.extract(lm, concept.pairs(seed=0), "mean_diff")
    res = isokl.calibrate_iso_kl(lm, vec, concept.calibration(seed=0, n=16), T=20)
    with isokl.steer(lm.model, res.vector, res.c_star): ...
    grid = isokl.calibrate_many(lm, [vec_a, vec_b, ...], prompts, T=20)   # one batch per solver round
    board = isokl.judge(lm, grid.results, concept)                         # effect, damage, floor (`isokl.api`)
    r = isokl.check(lm, res.vector, my_prompts)                            # held-out p95, interval, R1's verdict

Layers (imports only go down): `core` (models, hooks, rollout, statistic, calibrate, vector,
methods, activations, prompts, concepts) -> `study` (config, measures, metrics, sweep, cluster,
records) -> `report` (index, estimate, inference, table, claims, figure, build: no torch) -> `cli`.
docs/architecture.md has the picture.
Attributes load lazily, so `isokl.report` runs where torch is not installed.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {  # module -> the names it gives `isokl.NAME`, imported on first use
    "api": ("CheckResult", "Generation", "Grid", "calibrate", "check", "generate", "judge", "steer", "wrap"),
    "core.activations": ("extract",),
    "core.calibrate": ("CalibrationResult", "JointCalibration", "calibrate_iso_kl", "calibrate_many", "solve"),
    "core.concept": ("Concept",),
    "core.methods": ("METHODS", "get_method"),
    "core.models": ("BUNDLED", "LM", "load"),
    "core.rollout": ("evaluate",),
    "core.vector": ("Calibration", "Vector"),
}
_LAZY = {"prompts": ("core.prompts", None)} | {name: (mod, name) for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'isokl' has no attribute {name!r}")
    mod, attr = _LAZY[name]
    m = import_module(f".{mod}", __name__)
    return m if attr is None else getattr(m, attr)
