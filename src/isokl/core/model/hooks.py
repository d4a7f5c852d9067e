"""Hooks: the one runtime that attaches a Vector to a model. `with steer(model, vector, c): ...`

Steering edits the output of each selected transformer block (the residual stream) at
every position, prompt and generated. `c` is a float or a per-row tensor [b], so one
batch can hold several coefficients (and c = 0 rows that are exactly the base model);
`steer_rows` puts several vectors (any methods, any layers) in one batch, a block of rows each.
Hooks never edit in place and are always removed in a `finally`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..methods import get_method
from .models import Model


class Steerable(Protocol):
    """What a hook reads of a vector (`formats.vector.Vector` is one): its method's rule, the blocks it steers, one
    direction per block [l d], the method's further tensors and settings. Hooks sit below the vector's file format,
    so they ask for these fields, not for the class."""

    @property
    def method(self) -> str: ...
    @property
    def layers(self) -> tuple[int, ...]: ...
    @property
    def directions(self) -> torch.Tensor: ...
    @property
    def extra(self) -> Mapping[str, torch.Tensor]: ...
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def model_id(self) -> str: ...


def blocks(model: Model) -> torch.nn.ModuleList:
    """The list of transformer blocks (decoder layers) of a causal LM."""
    n = model.config.get_text_config().num_hidden_layers
    for name in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers"):
        mod = model
        try:
            for part in name.split("."):
                mod = getattr(mod, part)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ValueError(f"cannot find the {n} transformer blocks of {type(model).__name__}")


def default_layers(n_layers: int, band: tuple[float, float] = (0.25, 0.75)) -> tuple[int, ...]:
    """Blocks round(lo x depth) .. round(hi x depth) - 1 of a band of depth; default the middle band, 25%..75% of depth
    (DESIGN.md section 2). Always at least one block, always inside the model (a band reaching depth 1.0 included)."""
    lo = min(round(band[0] * n_layers), n_layers - 1)
    return tuple(range(lo, min(max(round(band[1] * n_layers), lo + 1), n_layers)))


def _hidden(output):
    """A block's output -> (hidden states, the rest of a tuple output or None)."""
    return (output[0], output[1:]) if isinstance(output, tuple) else (output, None)


def _join(h, rest):
    return (h, *rest) if rest is not None else h


@contextmanager
def steer(model: Model, vector: Steerable | None, c: float | torch.Tensor):
    """Apply `vector` at coefficient c inside the block; c: float, or tensor [b] (one c per batch row).

    vector None or c == 0 (a float): exactly the base model, no hook at all.
    """
    if vector is None or (isinstance(c, (int, float)) and c == 0):
        yield model
        return
    with steer_rows(model, [(vector, slice(None))], c):
        yield model


@contextmanager
def steer_rows(model: Model, parts: Sequence[tuple[Steerable, slice]], c: float | torch.Tensor):
    """Several vectors in one batch: `parts` = (vector, its rows), rows disjoint and in ascending order (slice(None):
    every row). A row is steered only at its own vector's layers; rows outside every part (e.g. base twins) pass
    through untouched. c: float, or tensor [b] (one c per batch row). The one runtime behind `steer`."""
    handles = []
    try:
        layer_list = blocks(model)
        width = model.config.get_text_config().hidden_size
        p = next(model.parameters())
        # moved and cast once here, not per layer per step (a host-to-device copy each call would sync the GPU)
        c_rows = torch.as_tensor(c, dtype=p.dtype).to(p.device)
        c_rows = c_rows.view(-1, 1, 1) if c_rows.ndim == 1 else c_rows  # [b 1 1] or a scalar
        if len(parts) > 1 and c_rows.ndim != 3:
            raise ValueError("several vectors in one batch need one coefficient per row (a tensor [b])")
        per_layer: dict[int, list] = {}
        for vector, rows in parts:
            if max(vector.layers) >= len(layer_list) or vector.directions.shape[1] != width:
                ls, d = vector.layers, vector.directions.shape[1]
                raise ValueError(
                    f"this vector was fitted on {vector.model_id} (layers {ls[0]}..{ls[-1]}, width {d}); "
                    f"{type(model).__name__} has {len(layer_list)} layers of width {width}: they do not fit"
                )
            tensors = {"direction": vector.directions, **vector.extra}
            tensors = {k: t.to(device=p.device, dtype=p.dtype) for k, t in tensors.items()}
            method = get_method(vector.method)
            for i, layer in enumerate(vector.layers):
                state = {k: t[i] for k, t in tensors.items()}
                per_layer.setdefault(layer, []).append((rows, method, state, vector.config))

        def hook_for(edits: list):
            def hook(_mod, _args, output):
                h, rest = _hidden(output)
                if c_rows.ndim == 3 and c_rows.shape[0] != h.shape[0]:
                    raise ValueError(f"{c_rows.shape[0]} coefficients for a batch of {h.shape[0]} rows")
                c_h = c_rows.to(h.dtype)
                if len(edits) == 1 and edits[0][0] == slice(None):
                    _, method, state, config = edits[0]
                    return _join(method.apply(h, state, c_h, config), rest)
                pieces, at = [], 0
                for rows, method, state, config in edits:
                    if rows.start > at:
                        pieces.append(h[at : rows.start])  # rows no vector steers here
                    pieces.append(method.apply(h[rows], state, c_h[rows], config))
                    at = rows.stop
                pieces.append(h[at:])
                return _join(torch.cat(pieces), rest)

            return hook

        for layer, edits in per_layer.items():
            edits.sort(key=lambda e: e[0].start or 0)
            handles.append(layer_list[layer].register_forward_hook(hook_for(edits)))
        yield model
    finally:
        for hd in handles:
            hd.remove()


@dataclass(frozen=True)
class Layout:
    """Batch rows for vector blocks x doses x prompts: flat dose k (the doses of vector block 0 first, then block 1's, ...)
    holds rows k*n .. k*n + n - 1, row k*n + i being prompt i at coefficient coeffs[k]. `sizes` = doses per vector block
    (default: one block of all doses). The one owner of that rule: rollouts, forks and metrics lay out and split their
    rows through it."""

    coeffs: tuple[float, ...]
    n: int
    sizes: tuple[int, ...] = ()

    @classmethod
    def for_vectors(cls, coeffs: Sequence[Sequence[float]], n: int) -> Layout:
        """One vector block per entry of `coeffs` (that vector's doses), n prompts each."""
        return cls(tuple(float(c) for cs in coeffs for c in cs), n, tuple(len(cs) for cs in coeffs))

    def __post_init__(self):
        if self.sizes and (sum(self.sizes) != len(self.coeffs) or min(self.sizes) < 1):
            raise ValueError(f"vector blocks of {self.sizes} doses do not add up to the {len(self.coeffs)} coefficients")

    @property
    def k(self) -> int:
        return len(self.coeffs)

    @property
    def blocks(self) -> tuple[int, ...]:
        """Doses per vector block."""
        return self.sizes or (self.k,)

    def doses(self, j: int) -> range:
        """The flat dose indices of vector block j."""
        start = sum(self.blocks[:j])
        return range(start, start + self.blocks[j])

    def block_of(self, k: int) -> int:
        """The vector block that flat dose k belongs to."""
        at = 0
        for j, size in enumerate(self.blocks):
            at += size
            if k < at:
                return j
        raise IndexError(f"dose {k} outside the layout's {self.k} doses")

    def block(self, j: int) -> slice:
        """The rows of vector block j."""
        d = self.doses(j)
        return slice(d.start * self.n, d.stop * self.n)

    def parts(self, vectors: Sequence[Steerable]) -> list[tuple[Steerable, slice]]:
        """`steer_rows`'s parts for every row of this layout: one vector steers all rows, several their own blocks."""
        if len(vectors) == 1:
            return [(vectors[0], slice(None))]
        if len(vectors) != len(self.blocks):
            raise ValueError(f"{len(vectors)} vectors for a layout of {len(self.blocks)} blocks")
        return [(v, self.block(j)) for j, v in enumerate(vectors)]

    def c_per_row(self) -> torch.Tensor:
        """[k*n] float64: the coefficient of each row (for `steer`)."""
        return torch.tensor([c for c in self.coeffs for _ in range(self.n)], dtype=torch.float64)

    def repeat(self, seqs: list) -> list:
        """The n prompts once per coefficient, in row order."""
        return list(seqs) * self.k

    def rows(self, k: int) -> slice:
        return slice(k * self.n, (k + 1) * self.n)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[k*n ...] -> [k n ...]."""
        return x.reshape(self.k, self.n, *x.shape[1:])


class Captured(Exception):
    """Raised by `capture(..., stop=True)` once the deepest asked layer has run: the caller catches it."""


@contextmanager
def capture(model: Model, layers: tuple[int, ...], stop: bool = False):
    """Record block outputs at `layers`: yields a dict layer -> [b s d] filled by the next forward. stop: end that
    forward by raising `Captured` after the deepest of them (the blocks above it, and the head, are not run; a KV
    cache it was given is left half-updated: use a throwaway one)."""
    layer_list = blocks(model)
    store: dict[int, torch.Tensor] = {}
    handles = []
    last = max(layers)
    try:
        for layer in layers:

            def hook(_mod, _args, output, layer=layer):
                store[layer] = _hidden(output)[0].detach()
                if stop and layer == last:
                    raise Captured

            handles.append(layer_list[layer].register_forward_hook(hook))
        yield store
    finally:
        for hd in handles:
            hd.remove()
