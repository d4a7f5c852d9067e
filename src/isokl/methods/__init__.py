"""Methods: the registry of steering methods. Each file in this folder is one method.

A method owns the math only: `fit` turns paired activations into one unit direction per
layer, `apply` edits a block output for a dose `c`. Hooks live in `isokl.hooks`.
Contract (tested for every registered method): `apply(h, v, 0) == h` exactly.
Adding a method = one file plus one `@register` line.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Method(Protocol):
    name: str

    def fit(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """pos, neg: [l n d] paired block outputs -> [l d] unit directions."""

    def apply(self, h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h: [b s d], v: [d], c: [b 1 1] -> [b s d]; c = 0 returns h unchanged."""

    def initial_coeff(self, vector) -> float:
        """A first guess for the solver from the vector's activation scales (speed only, never the result)."""


METHODS: dict[str, Method] = {}


def register(cls):
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def unit(x: torch.Tensor) -> torch.Tensor:
    n = x.norm(dim=-1, keepdim=True)
    if (n == 0).any():
        raise ValueError("a direction has zero norm: the positive and negative activations are identical")
    return x / n


from . import directional_ablation, mean_diff, pca  # noqa: E402,F401  (registers the methods)
