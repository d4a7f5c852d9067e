"""pca: RepE-style reading vector, top principal direction of paired differences.

Paper: Zou et al. 2023, "Representation Engineering", https://arxiv.org/abs/2310.01405.
Rule:  v_l = top right-singular vector of the *uncentred* stack D_l = [h+_i - h-_i]_i,
       sign chosen to agree with the mean difference;  h <- h + c * v_l.
Intuition: the direction that explains most of the paired differences is the concept.
Differs from common code: no centring. Centring D subtracts the mean difference, which
*is* the concept, and leaves only the noise between pairs (DESIGN.md section 7).
"""

from typing import ClassVar

import torch

from .registry import Fit, register, unit


@register
class PCA:
    name = "pca"
    fixed_vector = True  # h + c v with v fixed: a control vector, exportable and servable by llama.cpp

    config: ClassVar[dict] = {}

    def fit(self, pos: torch.Tensor, neg: torch.Tensor, config: dict) -> Fit:  # [l n d] x2 -> [l d]
        diffs = (pos - neg).double()  # [l n d]
        _, _, vh = torch.linalg.svd(diffs, full_matrices=False)  # vh: [l k d]
        v = vh[:, 0]  # [l d] top right-singular vector per layer
        sign = torch.sign((v * diffs.mean(dim=1)).sum(-1, keepdim=True))  # agree with mean difference
        sign[sign == 0] = 1
        return Fit(unit((v * sign).to(pos.dtype)))

    def apply(self, h: torch.Tensor, state: dict, c: torch.Tensor, config: dict) -> torch.Tensor:
        return h + c * state["direction"]

    def initial_coeff(self, vector) -> float:
        return 0.3 * vector.diff_norm  # as mean_diff: same kind of additive edit
