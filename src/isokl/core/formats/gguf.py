"""Export: a calibrated Vector -> another tool's file at c = alpha x c* baked in (a llama.cpp / repeng control-vector
GGUF, a steering-vectors .pt), and isokl's own fields in an exported GGUF (`describe`) read back (`gguf_fields`,
`gguf_meta`, `from_isokl_gguf`), so the file says how its dose was found and for which model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..methods import require_fixed_vector
from ..model.files import writing
from .tensors import _err, read_layers
from .vector import Vector

FORMATS = ("gguf", "repeng", "steering-vectors")


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
    from ..model.models import fingerprints

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
