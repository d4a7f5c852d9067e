"""isokl: iso-KL calibrated activation steering.

    vec = isokl.extract((model, tok), [("I love it", "I hate it"), ...], "mean_diff")   # the model you loaded
    res = isokl.calibrate_iso_kl((model, tok), vec, ["Tell me about your weekend.", ...])  # c*, interval, p95
    with isokl.steer(model, res): model.generate(...)                                   # at c* (alpha=2: twice)
    isokl.check((model, tok), res, other_prompts)                                        # held-out p95, R1's verdict
    isokl.generate((model, tok), res, "Hello")                                           # base and steered, KL per token
    grid = isokl.calibrate(lm, [vec_a, vec_b], prompts, controls=True)                  # jointly, with random floors
    board = isokl.judge(lm, grid)                                                        # effect, damage, floor
    lm = isokl.load("smollm2-135m")   # or isokl.wrap(model, tok); Vector.from_tensors(lm, {12: t}) for any vector

Layers (imports only go down): `core` (models, bundled, inputs, hooks, rollout, kl, statistic, solver, calibrate,
vector, interop, methods, activations, prompts, concept, show, forks, reference, files, llamacpp, served) -> `study` (config, verbs,
plan, measures, metrics, sweep, cluster, records, judge, progress) -> `report` (index, estimate, inference,
thresholds, table, claims, figure, evidence, page, leaderboard, browser, build: no torch) -> `api`, `cli`,
`cli_calibrate`. docs/architecture.md has the picture. Attributes load lazily, so `isokl.report` runs where torch is
not installed.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {  # module -> the names it gives `isokl.NAME`, imported on first use
    "api": ("CheckResult", "Generation", "Grid", "calibrate", "check", "generate", "judge", "steer", "wrap"),
    "core.extract": ("extract",),
    "core.calibrate": ("CalibrationResult", "JointCalibration", "calibrate_iso_kl", "calibrate_many", "solve"),
    "core.formats.concept": ("Concept",),
    "core.methods": ("METHODS", "get_method"),
    "core.model.models": ("BUNDLED", "LM", "load"),
    "core.runtimes.rollout": ("evaluate",),
    "core.formats.vector": ("Calibration", "Vector"),
}
_LAZY = {"prompts": ("core.model.prompts", None)} | {name: (mod, name) for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'isokl' has no attribute {name!r}")
    mod, attr = _LAZY[name]
    m = import_module(f".{mod}", __name__)
    return m if attr is None else getattr(m, attr)
