"""Methods: the registry of steering methods. Each file in this folder is one method.

A method owns the math only: `fit` turns paired activations into a `Fit` (one unit
direction per layer, plus any further per-layer tensors it needs), `apply` edits a block
output for a coefficient `c` given one layer's state. Hooks live in `isokl.core.model.hooks`.
Contract (tested for every registered method): `apply(h, state, 0) == h` exactly.
Adding a method = one file in this folder with `@register` on its class, plus its name
in the import line at the bottom of this file (the import is what runs `@register`).
"""

from . import additive, directional_ablation, mean_diff, pca, random_direction  # noqa: F401  (registers the methods)
from .registry import (
    METHODS,
    Fit,
    Method,
    fit_mean_difference,
    get_method,
    register,
    require_fixed_vector,
    unit,
)

__all__ = ["METHODS", "Fit", "Method", "fit_mean_difference", "get_method", "register", "require_fixed_vector", "unit"]
