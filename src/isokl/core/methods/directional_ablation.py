"""directional_ablation: remove (or reflect) a direction from the residual stream.

Paper: Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single Direction",
https://arxiv.org/abs/2406.11717.
Rule:  h <- h - c * (h . v_l) v_l,  v_l = unit(mean h+ - mean h-).
Intuition: c = 1 projects the concept out entirely, c = 2 reflects it, c > 2 pushes the
activation to the opposite side; c = 0 is the base model.
Differs from the paper: the paper ablates at c = 1 only (and at every layer and
position); here c is the dose that iso-KL calibration chooses, so c = 0 is exactly the
identity (an ablation whose coefficient only scales an extra nudge never reaches KL = 0,
DESIGN.md section 7). If even a large c cannot reach the KL target, calibration says so.
"""

from typing import ClassVar

import torch

from .registry import fit_mean_difference, register


@register
class DirectionalAblation:
    name = "directional_ablation"
    fixed_vector = False  # h - c (h . v) v depends on h: no fixed vector to export or serve

    config: ClassVar[dict] = {}
    fit = staticmethod(fit_mean_difference)  # the same direction as mean_diff

    def apply(self, h: torch.Tensor, state: dict, c: torch.Tensor, config: dict) -> torch.Tensor:
        v = state["direction"]
        proj = (h * v).sum(-1, keepdim=True)  # [b s 1]
        return h - c * proj * v

    def initial_coeff(self, vector) -> float:
        # the edit's size is c |h . v|; aim it at about half the concept's own scale (docs/decisions.md)
        return 0.5 * vector.diff_norm / max(vector.proj_mean, 1e-12)
