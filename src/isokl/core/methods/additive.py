"""additive: activation addition with the vector's own per-layer magnitudes (the form other tools ship).

Paper: Turner et al. 2023, "Steering Language Models With Activation Engineering" (ActAdd),
https://arxiv.org/abs/2308.10248; the rule of llama.cpp control vectors, repeng and steering-vectors.
Rule:  h <- h + c * v_l,  v_l as given; fitted here as the raw mean difference mean h+ - mean h-.
Intuition: a vector from another tool carries its own balance between layers; c scales the whole
vector, so iso-KL calibration gives it a dose without changing that balance.
Differs from mean_diff: no per-layer normalisation. `isokl calibrate --vector FILE` imports a
vector from another tool under this rule (`isokl.core.formats.interop`).
"""

from typing import ClassVar

import torch

from .registry import Fit, register


@register
class Additive:
    name = "additive"
    fixed_vector = True  # h + c v with v fixed: a control vector, exportable and servable by llama.cpp
    config: ClassVar[dict] = {}

    def fit(self, pos: torch.Tensor, neg: torch.Tensor, config: dict) -> Fit:  # [l n d] x2 -> [l d]
        d = (pos - neg).mean(dim=1)
        if (d.norm(dim=-1) == 0).any():
            raise ValueError("a direction has zero norm: the positive and negative activations are identical")
        return Fit(d)

    def apply(self, h: torch.Tensor, state: dict, c: torch.Tensor, config: dict) -> torch.Tensor:
        return h + c * state["direction"]

    def initial_coeff(self, vector) -> float:
        size = float(vector.directions.norm(dim=-1).mean())
        # fitted: the edit mean_diff starts from (0.3 x the mean difference); imported: 10% of the residual norm
        return 0.3 * vector.diff_norm / size if vector.diff_norm > 0 else 0.1 * vector.resid_norm / size
