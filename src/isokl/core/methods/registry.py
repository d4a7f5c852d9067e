"""Registry: the `Method` protocol every method file follows, `Fit` (what `fit` returns), `register` and
`get_method`, and the fits methods share (`fit_mean_difference`, `unit`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class Fit:
    """What `fit` returns: directions [l d] (unit rows; `Vector.directions`) and any further per-layer
    tensors, each [l ...] (`Vector.extra`; saved with the vector under its name)."""

    directions: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(Protocol):
    name: str
    # True where the edit is h + c v with v fixed (it does not read h): the only rule a control vector can carry, so
    # the only one llama.cpp serves and the export formats hold (`require_fixed_vector`).
    fixed_vector: bool
    config: dict[str, Any]  # hyperparameters and their defaults (JSON values); a vector stores the ones it used

    def fit(self, pos: torch.Tensor, neg: torch.Tensor, config: Mapping[str, Any]) -> Fit:
        """pos, neg: [l n d] paired block outputs -> Fit."""

    def apply(self, h: torch.Tensor, state: dict[str, torch.Tensor], c: torch.Tensor, config: Mapping[str, Any]) -> torch.Tensor:
        """h: [b s d]; state: one layer's tensors ("direction" [d] and the Fit's extras); c: [b 1 1] -> [b s d].
        c = 0 returns h unchanged."""

    def initial_coeff(self, vector) -> float:
        """A first guess for the solver from the vector's activation scales (speed only, never the result)."""


METHODS: dict[str, Method] = {}


def fit_mean_difference(pos: torch.Tensor, neg: torch.Tensor, config: Mapping[str, Any]) -> Fit:
    """v_l = unit(mean_i h+_i - mean_i h-_i): the direction CAA adds and directional ablation removes."""
    return Fit(unit((pos - neg).mean(dim=1)))


def register(cls):
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def require_fixed_vector(method: str, where: str) -> None:
    """One line where `where` (a runtime or a file format that only adds a fixed vector) meets a method whose edit
    reads the activation (`Method.fixed_vector` False), e.g. directional_ablation's h - c (h . v) v."""
    if not get_method(method).fixed_vector:
        fixed = ", ".join(sorted(n for n, m in METHODS.items() if m.fixed_vector))
        raise ValueError(
            f"{where} only adds a fixed vector (h + c v); a {method} vector's rule reads the activation, so its dose "
            f"there would be another method's: use the transformers runtime, or a fixed-vector method ({fixed})"
        )


def unit(x: torch.Tensor) -> torch.Tensor:
    n = x.norm(dim=-1, keepdim=True)
    if (n == 0).any():
        raise ValueError("a direction has zero norm: the positive and negative activations are identical")
    return x / n
