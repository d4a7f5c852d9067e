"""The runtime registry: a runtime is one `Runtime` value, found by name; what it can do is one of its fields, so a
new runtime works through every verb (Python and CLI) with no other file touched."""

import dataclasses

import pytest

import isokl
from conftest import main_exit, one_line_error
from isokl.core.formats import concept
from isokl.core.model.prompts import calibration_prompts
from isokl.core.runtimes import RUNTIMES, RuntimeMissing, get_runtime, hf


@pytest.fixture
def plain_adder(monkeypatch):
    """A planted runtime: transformers' own arithmetic, but declared as one that only adds fixed vectors (as a
    control-vector server is), registered for this test only."""
    rt = dataclasses.replace(hf.TRANSFORMERS, name="plain-adder", fixed_vectors_only=True, judged=False)
    monkeypatch.setitem(RUNTIMES, rt.name, rt)
    return rt


def test_a_registered_runtime_calibrates_checks_and_refuses_by_its_fields(llama_lm, plain_adder):
    pairs, prompts = concept.extraction_pairs(0), calibration_prompts(0, 3)
    vec = isokl.extract(llama_lm, pairs, "mean_diff")
    grid = isokl.calibrate(llama_lm, vec, prompts, T=6, runtime="plain-adder", progress=False)
    ref = isokl.calibrate(llama_lm, vec, prompts, T=6, progress=False)
    assert grid[0].c_star == ref[0].c_star and grid[0].converged  # the same arithmetic: the same dose
    chk = isokl.check(llama_lm, grid[0], prompts, runtime="plain-adder")
    assert chk.runtime == "plain-adder" and chk.p95 == isokl.check(llama_lm, grid[0], prompts).p95
    abl = isokl.extract(llama_lm, pairs, "directional_ablation")
    with pytest.raises(ValueError, match='runtime="plain-adder" only adds a fixed vector'):
        isokl.calibrate(llama_lm, abl, prompts, T=6, runtime="plain-adder", progress=False)


def test_the_cli_takes_its_runtime_names_from_the_registry(plain_adder, capsys, no_load):
    assert main_exit(["calibrate", "--runtime", "vllm", "--no-judge"]) == 1
    one_line_error(capsys, "--runtime", ", ".join(RUNTIMES), "plain-adder")
    assert main_exit(["calibrate", "--runtime", "plain-adder", "--method", "directional_ablation", "--no-judge"]) == 1
    one_line_error(capsys, "--runtime plain-adder only adds a fixed vector")


def test_a_runtime_that_is_not_installed_says_how_in_one_line(monkeypatch, capsys, no_load):
    def missing():
        raise RuntimeMissing("the planted runtime needs planted-package: pip install planted-package")

    monkeypatch.setitem(RUNTIMES, "planted", dataclasses.replace(hf.TRANSFORMERS, name="planted", installed=missing))
    with pytest.raises(RuntimeMissing, match="pip install planted-package"):
        get_runtime("planted")
    with pytest.raises(ValueError, match="runtime: 'nope'; valid: transformers, llama.cpp"):
        get_runtime("nope")
    assert main_exit(["calibrate", "--runtime", "planted", "--no-judge"]) == 1
    one_line_error(capsys, "--runtime planted", "pip install planted-package")
