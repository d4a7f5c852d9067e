"""Tensors: a vector's {layer: tensor} from another tool's file (`read_layers`) or held in memory (`layers_of`),
each checked the one way (`check_layers`) before it becomes a Vector.

A vector file comes from a stranger: .pt files load with `torch.load(weights_only=True)` (no pickled code runs), GGUF
is parsed by the `gguf` package, and every tensor is checked (one per layer, floating point, the same width, finite,
a norm in (0, 1e6]) before use.
"""

from __future__ import annotations

from pathlib import Path

import torch

MAX_NORM = 1e6  # a per-layer norm beyond this is no steering vector (activations are O(1e1-1e3))


class VectorFileError(ValueError):
    pass


def _err(path, what: str) -> VectorFileError:
    return VectorFileError(f"{path}: {what}")


def _layer_key(path, key) -> int:
    s = str(key).removeprefix("direction.").removeprefix("layer.")
    if not s.isdigit():
        raise _err(path, f"tensor {key!r} does not name a layer (want L, layer.L or direction.L with L >= 0)")
    return int(s)


def _from_pt(path: Path) -> dict:
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code runs
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, OSError, ValueError) as e:
        if "Weights only load failed" in str(e):  # torch's refusal of anything but tensors and containers
            raise _err(
                path,
                "refused by torch's weights-only loader: not a plain {layer: tensor} file (a pickled object could run "
                "code on load); save the dict, e.g. torch.save(steering_vector.layer_activations, f)",
            ) from None
        raise _err(
            path, f"not a readable torch file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty'})"
        ) from None
    if isinstance(obj, torch.Tensor) or not isinstance(obj, dict):
        raise _err(path, f"holds a {type(obj).__name__}, not a {{layer: tensor}} dict")
    return obj


def _from_gguf(path: Path) -> dict:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError) as e:
        raise _err(path, f"not a readable GGUF file ({e})") from None
    arch = reader.get_field("general.architecture")
    if arch is not None and bytes(arch.parts[-1]).decode(errors="replace") != "controlvector":
        raise _err(path, f"a GGUF of architecture {bytes(arch.parts[-1]).decode(errors='replace')!r}, not a control vector")
    return {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors if t.name.startswith("direction.")}


def _from_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise _err(path, f"not a readable safetensors file ({e})") from None


def read_layers(path: str | Path, n_layers: int | None = None) -> dict[int, torch.Tensor]:
    """A vector file in any format above -> {layer: float32 [d]}, checked (`check_layers`; with n_layers, against
    the model's depth too). (An isokl file: `Vector.load`.)"""
    path = Path(path)
    if not path.is_file():
        raise _err(path, "no such file")
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        raw = _from_gguf(path)
    elif suffix == ".safetensors":
        raw = _from_safetensors(path)
    elif suffix in (".pt", ".pth", ".bin"):
        raw = _from_pt(path)
    else:
        raise _err(path, "unknown vector format: give a .gguf, .safetensors or .pt file")
    return check_layers({_layer_key(path, k): t for k, t in raw.items()}, path, n_layers)


def check_layers(raw: dict, where, n_layers: int | None = None) -> dict[int, torch.Tensor]:
    """{layer: tensor} from a file or from memory -> {layer: float32 [d]} in layer order, each checked: floating point,
    one vector per layer, finite, a norm in (0, MAX_NORM], one width. With n_layers, a negative layer L counts from the
    end (block n_layers + L, as repeng numbers its layers) and a layer the model lacks is refused."""
    if not raw:
        raise _err(where, "holds no layer tensors")
    layers: dict[int, torch.Tensor] = {}
    for key, value in raw.items():
        layer = int(key)
        if n_layers is not None:
            if not -n_layers <= layer < n_layers:
                raise _err(where, f"layer {layer}: the model has blocks 0..{n_layers - 1} (or -{n_layers}..-1 from the end)")
            layer %= n_layers
        elif layer < 0:
            raise _err(where, f"layer {layer}: a layer from the end needs the model (give the vector with it)")
        t = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
        if not t.is_floating_point():
            raise _err(where, f"layer {layer}: not a floating-point tensor ({t.dtype})")
        t = t.detach().reshape(-1) if t.dim() == 2 and 1 in t.shape else t.detach()
        if t.dim() != 1:
            raise _err(where, f"layer {layer}: shape {tuple(t.shape)}, want one vector [d] per layer")
        if not bool(torch.isfinite(t).all()):
            raise _err(where, f"layer {layer}: NaN or infinite values")
        norm = float(t.double().norm())
        if not 0 < norm <= MAX_NORM:
            raise _err(where, f"layer {layer}: norm {norm:.3g} is outside (0, {MAX_NORM:g}]")
        if layer in layers:
            raise _err(where, f"layer {layer} appears twice")
        layers[layer] = t.float().cpu()
    widths = {t.shape[0] for t in layers.values()}
    if len(widths) > 1:
        raise _err(where, f"layers of different widths {sorted(widths)}")
    return dict(sorted(layers.items()))


def layers_of(obj, layers=None) -> tuple[dict, str]:
    """A vector held in memory -> ({layer: tensor} as given, what it was). Duck-typed, neither package imported:
    steering-vectors' `SteeringVector` (`layer_activations`, decoder-block outputs), repeng's `ControlVector`
    (`directions`, negative layers counted from the end), a {layer: tensor or array} dict, or one tensor with its
    `layers` ([d]: the same vector at each, [l d]: one row per layer)."""
    if hasattr(obj, "layer_activations"):
        kind = getattr(obj, "layer_type", "decoder_block")
        if kind != "decoder_block":
            raise VectorFileError(f"a SteeringVector of layer_type {kind!r}: isokl steers decoder-block outputs only")
        raw, what = dict(obj.layer_activations), "SteeringVector"
    elif isinstance(getattr(obj, "directions", None), dict):
        raw, what = dict(obj.directions), "ControlVector"
    elif isinstance(obj, dict):
        raw, what = dict(obj), "dict"
    elif hasattr(obj, "shape") and hasattr(obj, "ndim"):  # a torch tensor or numpy array
        t = torch.as_tensor(obj)
        if layers is None:
            raise VectorFileError(f"a tensor of shape {tuple(t.shape)} needs its layers: from_tensors(lm, t, layers=[...])")
        layers = [int(x) for x in ([layers] if isinstance(layers, int) else layers)]
        if t.dim() == 1:
            return {layer: t for layer in layers}, "tensor"
        if t.dim() == 2 and t.shape[0] == len(layers):
            return dict(zip(layers, t, strict=True)), "tensor"
        raise VectorFileError(f"a tensor of shape {tuple(t.shape)} for {len(layers)} layers: give [d] or [{len(layers)} d]")
    else:
        raise VectorFileError(
            f"got a {type(obj).__name__}: give a {{layer: tensor}} dict, a tensor with layers=, a steering-vectors "
            "SteeringVector or a repeng ControlVector"
        )
    if layers is not None:
        raise VectorFileError(f"layers= goes with one tensor; a {what} names its own layers")
    return raw, what
