"""Vector: a fitted steering direction set and its calibration provenance, as an immutable value.

`Vector` = method name + layers + one unit direction per layer [l d] (+ activation scales
there, which seed the solver). Calibration returns a new Vector carrying
`Calibration` (c*, target, statistic, window, prompt hash, converged, p95 at c*,
evaluations). Saved as safetensors: tensors plus provenance in the string metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..model.files import writing

FORMAT = "isokl.vector/1"


@dataclass(frozen=True)
class Calibration:
    coeff: float  # c*
    target: float  # nats
    statistic: str  # "p95 per-token KL(steered || base), steered greedy rollout"
    window: int  # T
    prompt_hash: str
    converged: bool
    status: str  # converged | unreachable | not_converged | jump
    p95: float  # at c*
    evaluations: int
    n_prompts: int
    c_lo: float = float("nan")  # an interval for c* from resampling the calibration prompts (nan: not computed)
    c_hi: float = float("nan")
    interval: str = ""  # how that interval was computed
    dtype: str = ""  # the model's weights during calibration (float32, bfloat16); "" in files from before 2026-11-29
    runtime: str = ""  # where its rollouts ran: "" = transformers; "llama.cpp (llama-cpp-python 0.3.36)"
    weights: str = ""  # the weights file, for a runtime that reads one (name, sha256 prefix, quantization)
    quantization: str = ""  # that file's quantization as llama.cpp names it
    tokenizer_sha: str = ""  # the model's fingerprints at calibration (`model.models.fingerprints`): an exported file carries
    weights_sha: str = ""  # them, and isokl refuses it on a model whose vocabulary or embeddings differ


@dataclass(frozen=True)
class Vector:
    method: str
    layers: tuple[int, ...]
    directions: torch.Tensor  # [l d] unit rows
    model_id: str
    resid_norm: float  # mean ||h|| at the steered layers on the extraction prompts
    diff_norm: float = 0.0  # mean over layers of ||mean h+ - mean h-||: the concept's own scale
    proj_mean: float = 0.0  # mean |h . v| over extraction prompts and layers
    pairs_hash: str = ""
    calibration: Calibration | None = None
    extra: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # a method's further tensors, [l ...]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the method's hyperparameters

    def __post_init__(self):
        if self.directions.ndim != 2 or self.directions.shape[0] != len(self.layers):
            raise ValueError(f"directions must be [l d] with l = {len(self.layers)} layers, got {tuple(self.directions.shape)}")
        bad = [k for k, t in self.extra.items() if t.shape[:1] != (len(self.layers),)]
        if bad:
            raise ValueError(f"extra tensors {bad} must have one row per layer ({len(self.layers)})")

    @property
    def coeff(self) -> float:
        """c*, the calibrated dose; use `steer(model, v, v.coeff * alpha)` for a dose alpha."""
        if self.calibration is None:
            raise ValueError("this vector is not calibrated: run isokl.calibrate_iso_kl (or `isokl calibrate`) first")
        return self.calibration.coeff

    @property
    def label(self) -> str:
        """method and layers, e.g. "pca at layers 7-22" (how messages and grid tables name a vector)."""
        ls = self.layers
        span = f"{ls[0]}-{ls[-1]}" if len(ls) > 1 and list(ls) == list(range(ls[0], ls[-1] + 1)) else ",".join(map(str, ls))
        return f"{self.method} at layer{'s' if len(ls) > 1 else ''} {span}"

    def __repr__(self) -> str:  # short: never the direction tensor
        dose = f", c* = {self.calibration.coeff:.6g} ({self.calibration.status})" if self.calibration else ", uncalibrated"
        return f"Vector({self.label} on {self.model_id}, width {self.directions.shape[1]}{dose})"

    @classmethod
    def from_tensors(cls, lm, tensors, layers=None, *, prompts=None) -> Vector:
        """A vector held in memory -> an uncalibrated additive Vector on `lm` (an LM or (model, tokenizer)): a {layer:
        tensor} dict, one tensor with its `layers` ([d] at each, or [l d]), a steering-vectors SteeringVector or a
        repeng ControlVector (negative layers count from the end; `tensors.layers_of`). Checked against the model
        (width, layers, finite, non-zero) before anything runs; the residual norm at its layers is measured on
        `prompts` (default: the library's)."""
        from ..model.inputs import as_lm
        from .tensors import check_layers, layers_of

        lm = as_lm(lm)
        raw, what = layers_of(tensors, layers)
        return cls.additive(lm, check_layers(raw, what, lm.n_layers), f"in-memory:{what}", prompts)

    @classmethod
    def additive(cls, lm, layers: Mapping[int, torch.Tensor], source: str, prompts=None) -> Vector:
        """Checked {layer: tensor [d]} (`tensors.check_layers`) -> an uncalibrated `additive` Vector on `lm`, with the
        residual norm at its layers measured on `prompts` (default: seed 0's draw of the library's calibration
        prompts): the solver's first guess. `source` says where the tensors came from (pairs_hash)."""
        from ..model.inputs import as_prompts
        from ..model.prompts import calibration_prompts
        from ..model.reading import last_token
        from .tensors import VectorFileError

        width = next(iter(layers.values())).shape[0]
        if width != lm.d_model:
            raise VectorFileError(f"{source}: vectors of width {width}; {lm.id} has width {lm.d_model}")
        at = tuple(layers)
        read = last_token(lm, as_prompts(prompts) if prompts else calibration_prompts(0), at)  # [l n d]
        return cls(
            method="additive",
            layers=at,
            directions=torch.stack(list(layers.values())),
            model_id=lm.id,
            resid_norm=float(read.norm(dim=-1).mean()),
            pairs_hash=source,
        )

    def calibrated(self, cal: Calibration) -> Vector:
        return dataclasses.replace(self, calibration=cal)

    def check_shape(self, model_id: str, n_layers: int, d_model: int) -> None:
        """Refuse a model whose depth or width does not fit this vector's layers and directions."""
        if max(self.layers, default=-1) >= n_layers or self.directions.shape[1] != d_model:
            raise ValueError(
                f"this vector was fitted on {self.model_id} (layers {self.layers[0]}..{self.layers[-1]}, width "
                f"{self.directions.shape[1]}); {model_id} has {n_layers} layers of width {d_model}: they do not fit"
            )

    def check_fits(self, model_id: str, n_layers: int, d_model: int) -> None:
        """Refuse a model this vector was not fitted on: another shape always, another id unless transferred."""
        self.check_shape(model_id, n_layers, d_model)
        if self.model_id != model_id:
            raise ValueError(
                f"this vector was fitted on {self.model_id}, not {model_id}; to apply it there on purpose use "
                f"`vector.for_model({model_id!r})` (CLI: --allow-other-model); its c* was calibrated on {self.model_id}"
            )

    def for_model(self, model_id: str) -> Vector:
        """The same directions declared for another model of the same shape (deliberate transfer)."""
        return dataclasses.replace(self, model_id=model_id)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "method": self.method,
            "layers": json.dumps(list(self.layers)),
            "model_id": self.model_id,
            "resid_norm": repr(self.resid_norm),
            "diff_norm": repr(self.diff_norm),
            "proj_mean": repr(self.proj_mean),
            "pairs_hash": self.pairs_hash,
            "calibration": json.dumps(dataclasses.asdict(self.calibration) if self.calibration else None),
            "config": json.dumps(dict(self.config)),
        }
        tensors = {"directions": self.directions, **{f"extra.{k}": t for k, t in self.extra.items()}}
        with writing(path) as tmp:
            save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(tmp), metadata=meta)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600; a saved vector is meant to be shared
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vector:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not an isokl vector file (format {meta.get('format')!r}, want {FORMAT!r})")
            cal = json.loads(meta["calibration"])
            tensors = load_file(str(path))
            return cls(
                method=meta["method"],
                layers=tuple(json.loads(meta["layers"])),
                directions=tensors["directions"],
                extra={k.removeprefix("extra."): t for k, t in tensors.items() if k.startswith("extra.")},
                config=json.loads(meta.get("config", "{}")),
                model_id=meta["model_id"],
                resid_norm=float(meta["resid_norm"]),
                diff_norm=float(meta.get("diff_norm", 0.0)),
                proj_mean=float(meta.get("proj_mean", 0.0)),
                pairs_hash=meta.get("pairs_hash", ""),
                calibration=Calibration(**cal) if cal else None,
            )
        except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable isokl vector file ({type(e).__name__}: {e}); was it truncated?") from None
