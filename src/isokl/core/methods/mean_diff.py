"""mean_diff: contrastive activation addition (CAA).

Paper: Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition",
https://arxiv.org/abs/2312.06681 (and Turner et al. 2023, ActAdd).
Rule:  h <- h + c * v_l,  v_l = unit(mean_i h+_i - mean_i h-_i)  at each steered layer l.
Intuition: the average difference between "positive" and "negative" runs points along
the concept; adding it pushes every position toward the positive side.
Differs from the paper: v is unit-normalised so c is in residual-stream units and the
dose is set by iso-KL calibration, not by a hand-picked multiplier of the raw difference.
"""

from typing import ClassVar

import torch

from .registry import fit_mean_difference, register


@register
class MeanDiff:
    name = "mean_diff"
    fixed_vector = True  # h + c v with v fixed: a control vector, exportable and servable by llama.cpp

    config: ClassVar[dict] = {}
    fit = staticmethod(fit_mean_difference)  # [l n d] x2 -> [l d]

    def apply(self, h: torch.Tensor, state: dict, c: torch.Tensor, config: dict) -> torch.Tensor:
        return h + c * state["direction"]  # c: [b 1 1]; c = 0 adds exact zeros

    def initial_coeff(self, vector) -> float:
        # c* / ||mean difference|| was 0.26-0.37 on the bundled models (docs/decisions.md)
        return 0.3 * vector.diff_norm
