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

Per-layer magnitudes are kept as given; the coefficient c scales the whole vector. The checks every tensor passes
are `tensors`'; the exported files and their isokl fields are `gguf`'s.
"""

from __future__ import annotations

from pathlib import Path

from .gguf import from_isokl_gguf, gguf_fields, gguf_meta
from .tensors import read_layers
from .vector import FORMAT, Vector


def from_tensors(lm, vector, layers=None, *, prompts=None) -> Vector:
    """A vector held in memory -> an uncalibrated `additive` Vector on `lm` (`Vector.from_tensors`)."""
    return Vector.from_tensors(lm, vector, layers, prompts=prompts)


def from_file(lm, path: str | Path, prompts=None) -> Vector:
    """A vector file -> a Vector on `lm`: an isokl file as saved (it must fit `lm`), another tool's (`read_layers`)
    the same way as `from_tensors`."""
    from ..model.inputs import as_lm

    lm = as_lm(lm)
    if is_isokl_file(path):
        vec = Vector.load(path)
        vec.check_fits(lm.id, lm.n_layers, lm.d_model)
        return vec
    if Path(path).suffix.lower() == ".gguf" and Path(path).is_file() and (fields := gguf_fields(path)):
        return from_isokl_gguf(lm, Path(path), fields)
    return Vector.additive(lm, read_layers(path, lm.n_layers), f"imported:{Path(path).name}", prompts)


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
