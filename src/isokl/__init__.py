"""isokl: iso-KL calibrated activation steering.

    lm = isokl.load("smollm2-135m")
    vec = isokl.extract(lm, isokl.prompts.extraction_pairs(seed=0), "mean_diff")
    res = isokl.calibrate_iso_kl(lm, vec, isokl.prompts.calibration_prompts(seed=0), T=20)
    with isokl.steer(lm.model, res.vector, res.c_star): ...

Data flow (one module each): prompts -> activations -> methods -> vector -> hooks ->
rollout (KL) -> calibrate -> metrics -> records (CSV) -> report (figure, table, claims).
"""

from . import prompts
from .activations import extract
from .calibrate import CalibrationResult, calibrate_iso_kl, solve
from .hooks import steer
from .methods import METHODS, get_method
from .models import BUNDLED, LM, load
from .rollout import evaluate, rollout
from .vector import Calibration, Vector

__version__ = "0.1.0"
__all__ = [
    "BUNDLED", "LM", "METHODS", "Calibration", "CalibrationResult", "Vector", "calibrate_iso_kl", "evaluate",
    "extract", "get_method", "load", "prompts", "rollout", "solve", "steer",
]
