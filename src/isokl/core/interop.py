"""Interop: other tools' steering-vector files -> {layer: tensor} -> Vector, and a calibrated Vector -> their files.

Every format below indexes a layer L the same way isokl does: L is the transformer block
(0-based) whose output gets the vector added, at every position.
- llama.cpp control vector GGUF (written by `llama-cvector-generator` or repeng's
  `export_gguf`): one f32 tensor `direction.L` [d] per layer. llama.cpp's loader puts
  `direction.L` into `tensors[L]`, and `apply_to(cur, il)` adds `tensors[il]` to block il's
  output after its residual add (src/llama-adapter.cpp, and each model's graph); block 0 is
  never steered there. `--control-vector-scaled F S` multiplies every direction by S.
- repeng `ControlVector`: directions {L: [d]} keyed by block index (`read_representations`
  reads `hidden_states[L + 1]`, the output of block L; `ControlModel` hooks `model.layers[L]`);
  its files are the GGUF above.
- steering-vectors `SteeringVector(layer_activations={L: [d]}, layer_type="decoder_block")`:
  `patch_activations` adds multiplier x activation to the output of `model.layers[L]`. As a
  file: `torch.save(sv.layer_activations, f)`, loaded back with `SteeringVector(torch.load(f))`.
- a plain {L: tensor} in safetensors (keys `L`, `layer.L` or `direction.L`) or in a .pt file.

A vector file comes from a stranger: .pt files load with `torch.load(weights_only=True)`
(no pickled code runs), GGUF is parsed by the `gguf` package, and every tensor is checked
(one per layer, floating point, the same width, finite, a norm in (0, 1e6]) before use.
Per-layer magnitudes are kept as given; the coefficient c scales the whole vector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .files import writing
from .methods import require_fixed_vector
from .vector import FORMAT, Vector

FORMATS = ("gguf", "repeng", "steering-vectors")
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


def file_method(path: str | Path) -> str:
    """The method of a vector file, read without a model: an isokl file's own (its .safetensors metadata or its GGUF
    fields), else "additive" (another tool's file is imported under the additive rule)."""
    if is_isokl_file(path):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return str((f.metadata() or {}).get("method", ""))
    if Path(path).suffix.lower() == ".gguf" and (fields := gguf_fields(path)):
        return str(gguf_meta(path, fields)[0].get("method", ""))
    return "additive"


def is_isokl_file(path: str | Path) -> bool:
    if Path(path).suffix.lower() != ".safetensors":
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


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


def from_tensors(lm, vector, layers=None, *, prompts=None) -> Vector:
    """A vector held in memory (`layers_of`) -> an uncalibrated `additive` Vector on `lm` (an LM or (model,
    tokenizer)), checked against the model before anything runs (width, layers, finite, non-zero), with the residual
    norm at its layers measured on `prompts` (default: seed 0's draw of the library's calibration prompts): the
    solver's first guess. Per-layer magnitudes are kept as given; c scales the whole vector."""
    from .inputs import as_lm

    lm = as_lm(lm)
    raw, what = layers_of(vector, layers)
    return _additive(lm, check_layers(raw, what, lm.n_layers), f"in-memory:{what}", prompts)


def from_file(lm, path: str | Path, prompts=None) -> Vector:
    """A vector file -> a Vector on `lm`: an isokl file as saved (it must fit `lm`), another tool's (`read_layers`)
    the same way as `from_tensors`."""
    from .inputs import as_lm

    lm = as_lm(lm)
    if is_isokl_file(path):
        vec = Vector.load(path)
        vec.check_fits(lm.id, lm.n_layers, lm.d_model)
        return vec
    if Path(path).suffix.lower() == ".gguf" and Path(path).is_file() and (fields := gguf_fields(path)):
        return from_isokl_gguf(lm, Path(path), fields)
    return _additive(lm, read_layers(path, lm.n_layers), f"imported:{Path(path).name}", prompts)


def _additive(lm, layers: dict[int, torch.Tensor], source: str, prompts) -> Vector:
    from .activations import last_token
    from .inputs import as_prompts
    from .prompts import calibration_prompts

    width = next(iter(layers.values())).shape[0]
    if width != lm.d_model:
        raise VectorFileError(f"{source}: vectors of width {width}; {lm.id} has width {lm.d_model}")
    at = tuple(layers)
    resid = float(last_token(lm, as_prompts(prompts) if prompts else calibration_prompts(0), at).norm(dim=-1).mean())
    return Vector(
        method="additive",
        layers=at,
        directions=torch.stack(list(layers.values())),
        model_id=lm.id,
        resid_norm=resid,
        pairs_hash=source,
    )


def as_vector(lm, x, prompts=None) -> Vector:
    """Any vector a verb accepts -> a Vector on `lm`: a `Vector` (it must fit), a calibration result (its vector), a
    file path (`from_file`), or a vector held in memory (`from_tensors`)."""
    if isinstance(x, Vector):
        x.check_fits(lm.id, lm.n_layers, lm.d_model)
        return x
    if isinstance(getattr(x, "vector", None), Vector):  # a CalibrationResult
        return as_vector(lm, x.vector)
    if isinstance(x, (str, Path)):
        return from_file(lm, x, prompts)
    return from_tensors(lm, x, prompts=prompts)


def scaled(vector: Vector, c: float) -> dict[int, torch.Tensor]:
    """{layer: c x direction} in float32: what an exported file holds and what llama.cpp adds at dose c."""
    return {layer: (c * vector.directions[i]).float().contiguous() for i, layer in enumerate(vector.layers)}


GGUF_NS = "isokl."  # the key-value fields an exported control vector describes itself with
GGUF_FORMAT = "isokl.controlvector/1"


def describe(vector: Vector, alpha: float) -> dict[str, str | float]:
    """What an exported GGUF says about itself, beside llama.cpp's own fields: how to apply it (operation, hook point,
    layer indexing, the dose baked in), how that dose was found (c*, alpha, target, statistic, window, prompts, runtime)
    and which model it is for (id and fingerprints). `vector` is the whole isokl vector's metadata, for a round trip."""
    cal = vector.calibration
    assert cal is not None
    return {
        "format": GGUF_FORMAT,
        "operation": "add: block L's output h becomes h + direction.L (the dose is baked in; apply at scale 1)",
        "hook": "the output of transformer block L after its residual add (llama.cpp's control vector, il = L)",
        "layer_indexing": "direction.L: 0-based transformer block L, as llama.cpp numbers il; block 0 is never steered",
        "method": vector.method,
        "layers": ",".join(map(str, vector.layers)),
        "c_star": cal.coeff,
        "alpha": float(alpha),
        "c": alpha * cal.coeff,
        "kl_target": cal.target,
        "statistic": cal.statistic,
        "window": float(cal.window),
        "status": cal.status,
        "p95": cal.p95,
        "n_prompts": float(cal.n_prompts),
        "prompt_hash": cal.prompt_hash,
        "runtime": cal.runtime or "transformers",
        "dtype": cal.dtype,
        "weights": cal.weights,
        "model_id": vector.model_id,
        "tokenizer_sha": cal.tokenizer_sha,
        "weights_sha": cal.weights_sha,
        "vector": json.dumps(vector_meta(vector)),
    }


def vector_meta(vector: Vector) -> dict:
    """A vector's metadata without its tensors (what `Vector.save` writes beside them)."""
    import dataclasses

    return {
        "method": vector.method,
        "layers": list(vector.layers),
        "model_id": vector.model_id,
        "resid_norm": vector.resid_norm,
        "diff_norm": vector.diff_norm,
        "proj_mean": vector.proj_mean,
        "pairs_hash": vector.pairs_hash,
        "config": dict(vector.config),
        "calibration": dataclasses.asdict(vector.calibration) if vector.calibration else None,
    }


def gguf_fields(path: str | Path) -> dict[str, object]:
    """The isokl.* fields of a GGUF file (empty for another tool's file), read by the gguf package."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError) as e:
        raise _err(path, f"not a readable GGUF file ({e})") from None
    out: dict[str, object] = {}
    for name, f in reader.fields.items():
        if name.startswith(GGUF_NS) and f.types:
            out[name.removeprefix(GGUF_NS)] = f.contents()
    return out


def gguf_meta(path, fields: dict):
    """An isokl GGUF's fields (`gguf_fields`) -> (the vector's metadata, its Calibration, the dose c baked in); one line
    for another format or incomplete fields."""
    from .vector import Calibration

    if fields.get("format") != GGUF_FORMAT:
        raise _err(path, f"isokl fields of format {fields.get('format')!r}; this isokl reads {GGUF_FORMAT!r}")
    try:
        meta = json.loads(str(fields["vector"]))
        if "model_id" not in meta:
            raise KeyError("model_id")
        return meta, Calibration(**meta["calibration"]), float(str(fields["c"]))
    except (KeyError, TypeError, ValueError) as e:
        raise _err(path, f"its isokl fields are incomplete or malformed ({type(e).__name__}: {e})") from None


def from_isokl_gguf(lm, path: Path, fields: dict) -> Vector:
    """An isokl-exported GGUF -> the calibrated Vector it was exported from (directions = the baked tensors / c), after
    checking it is for `lm`: its id, then its tokenizer and embedding fingerprints."""
    from .served import fingerprints

    meta, cal, c = gguf_meta(path, fields)
    if meta["model_id"] != lm.id:
        raise _err(path, f"a vector for {meta['model_id']}, not {lm.id}: refused (its dose was calibrated there)")
    mine = fingerprints(lm)
    for key in ("tokenizer_sha", "weights_sha"):
        theirs = getattr(cal, key)
        if theirs and theirs != mine[key]:
            what = key.removesuffix("_sha")
            raise _err(
                path,
                f"a vector for {meta['model_id']} whose {what} fingerprint ({theirs}) differs from this model's "
                f"({mine[key]}): another model under the same id; refused",
            )
    layers = read_layers(path, lm.n_layers)
    if tuple(layers) != tuple(meta["layers"]):
        raise _err(path, f"tensors for layers {list(layers)}, its fields say {meta['layers']}")
    if not (math.isfinite(c) and c != 0):
        raise _err(path, f"c = {c}: the baked dose must be finite and non-zero")
    return Vector(
        method=meta["method"],
        layers=tuple(meta["layers"]),
        directions=torch.stack([t / c for t in layers.values()]),
        model_id=meta["model_id"],
        resid_norm=float(meta["resid_norm"]),
        diff_norm=float(meta.get("diff_norm", 0.0)),
        proj_mean=float(meta.get("proj_mean", 0.0)),
        pairs_hash=meta.get("pairs_hash", ""),
        calibration=cal,
        config=meta.get("config", {}),
    )


def export(vector: Vector, fmt: str, out: str | Path, alpha: float = 1.0) -> Path:
    """Write `vector` at c = alpha x c* baked in, so that the other tool applies it at scale 1."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r}; valid: {', '.join(FORMATS)}")
    require_fixed_vector(vector.method, f"--format {fmt}")
    if vector.extra:
        raise ValueError(f"--format: the {vector.method} vector carries extra tensors these formats cannot hold")
    c = alpha * vector.coeff  # raises for an uncalibrated vector
    if not math.isfinite(c):
        raise ValueError(f"--alpha: c = {c} is not finite")
    layers = scaled(vector, c)
    out = Path(out)
    if fmt in ("gguf", "repeng") and 0 in layers:
        raise ValueError("--format gguf: llama.cpp never steers block 0; calibrate without layer 0")
    with writing(out) as tmp:
        if fmt in ("gguf", "repeng"):
            from gguf import GGUFWriter

            writer = GGUFWriter(str(tmp), "controlvector")
            writer.add_string("controlvector.model_hint", vector.model_id)
            writer.add_uint32("controlvector.layer_count", len(layers))
            for key, value in describe(vector, alpha).items():
                if isinstance(value, str):
                    writer.add_string(f"{GGUF_NS}{key}", value)
                else:
                    writer.add_float64(f"{GGUF_NS}{key}", value)
            for layer, t in layers.items():
                writer.add_tensor(f"direction.{layer}", t.numpy())
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        else:  # steering-vectors: its layer_activations dict
            torch.save(layers, tmp)
    return out
