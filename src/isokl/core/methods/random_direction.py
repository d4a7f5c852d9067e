"""random_direction: a seeded random unit direction per layer, added like mean_diff (a control, not a method).

Rule:  h <- h + c * v_l,  v_l = a standard normal draw in R^d, normalised; the draws come from
numpy's `default_rng([seed, j, 7919])` for the vector's j-th layer, so a seed gives the same directions on
every machine.
Intuition: calibrated to the same 1 nat as the real methods, it measures what any push of that size
does to the target axis; a method's shift beyond the random direction's is what its concept adds.
The contrast pairs are not used (their activations only give the first guess its scale).
"""

from typing import ClassVar

import numpy as np
import torch

from .registry import Fit, register


def random_directions(n_layers: int, d: int, seed: int) -> torch.Tensor:
    """[l d] unit rows; row j is drawn from its own generator (seed, j), independent of the others."""
    rows = []
    for j in range(n_layers):
        x = np.random.default_rng([seed, j, 7919]).standard_normal(d)
        rows.append(x / np.linalg.norm(x))
    return torch.tensor(np.stack(rows), dtype=torch.float32)


@register
class RandomDirection:
    name = "random_direction"
    fixed_vector = True  # h + c v with v fixed: a control vector, exportable and servable by llama.cpp
    config: ClassVar[dict] = {"seed": 0}

    def fit(self, pos: torch.Tensor, neg: torch.Tensor, config: dict) -> Fit:  # [l n d] x2 -> [l d]
        return Fit(random_directions(pos.shape[0], pos.shape[-1], int(config["seed"])).to(pos.device))

    def apply(self, h: torch.Tensor, state: dict, c: torch.Tensor, config: dict) -> torch.Tensor:
        return h + c * state["direction"]

    def initial_coeff(self, vector) -> float:
        return 0.3 * vector.diff_norm  # mean_diff's first guess: the same scale of edit
