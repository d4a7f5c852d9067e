"""llama.cpp as the runtime that serves a vector, for real: llama-cpp-python built by scripts/setup.sh, the bundled
smollm2-135m GGUF file (Q4_1), no mocks. CI always runs these (`.ci/run` checks the binding imports first); a checkout
set up with ISOKL_LLAMA=0 skips them."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import pytest
import torch

import isokl
from conftest import main_exit, one_line_error, run_refused
from isokl.core.formats.gguf import export, gguf_fields
from isokl.core.formats.interop import from_file
from isokl.core.formats.tensors import VectorFileError
from isokl.core.formats.vector import Calibration
from isokl.core.model.bundled import BUNDLED, gguf_path
from isokl.core.model.hooks import steer
from isokl.core.model.prompts import calibration_prompts
from isokl.core.runtimes import served
from isokl.core.runtimes.ggml import LlamaError, read_cvec
from isokl.core.runtimes.llamacpp import Llama

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None and not os.environ.get("CI"),
        reason="llama-cpp-python not installed (bash scripts/setup.sh builds it; ISOKL_LLAMA=0 skips); CI always runs this",
    ),
]

PAIRS = [("I love this, it is wonderful", "I hate this, it is awful"), ("What a great day", "What a terrible day")]


@pytest.fixture(scope="module")
def smol():
    return isokl.load("smollm2-135m")


@pytest.fixture(scope="module")
def prompts():
    return calibration_prompts(0, 4)


@pytest.fixture(scope="module")
def vec(smol):
    return isokl.extract(smol, PAIRS, "mean_diff")


def dosed(vec, c: float):
    """`vec` as if calibrated to c* = c (for export and check at a chosen dose)."""
    cal = Calibration(
        coeff=c, target=1.0, statistic="p95", window=20, prompt_hash="", converged=True, status="converged", p95=1.0,
        evaluations=1, n_prompts=4,
    )  # fmt: skip
    return vec.calibrated(cal)


def seqs_of(lm, prompts):
    return lm.encode([lm.format(p) for p in prompts])


def test_c_zero_gives_kl_exactly_zero_even_after_a_steered_dose(smol, vec, prompts):
    """The steered and base contexts run the same arithmetic on the same inputs: at c = 0 every KL is 0.0 exactly.
    Run after a steered dose, so the base's kept prompt cache (`Llama._base`, `_trim`) is part of what is checked."""
    seqs = seqs_of(smol, prompts)
    with served.open_gguf(smol, seqs, 12, None, smol.format(prompts[0])) as llama:
        hot = served.evaluate(llama, smol, seqs, 12, vec, 6.0)
        assert float(hot.kl[hot.valid].max()) > 0.5  # the dose does something
        ev = served.evaluate(llama, smol, seqs, 12, vec, 0.0)
        assert ev.valid.sum() > 0
        assert torch.equal(ev.kl[ev.valid], torch.zeros(int(ev.valid.sum()), dtype=torch.float64))
        again = served.evaluate(llama, smol, seqs, 12, vec, 6.0)  # and the kept base gives the same dose twice
        assert torch.equal(again.kl.nan_to_num(), hot.kl.nan_to_num()) and again.tokens == hot.tokens


def test_steered_logits_agree_with_transformers_within_the_quantization_floor(smol, vec, prompts):
    """llama.cpp runs the Q4_1 weights; transformers runs the same weights dequantized to float32. Their base logits
    differ only by llama.cpp's own arithmetic (8-bit activations inside every quantized dot product, f16 KV cache):
    rms e0, measured here. The steering effect D = steered - base then agrees between the runtimes within 2 e0: D_llama -
    D_tf = e(steered) - e(base), two errors of the same quantizers on activations of the same scale, each of rms about
    e0 (triangle inequality). The dose is strong (rms D >= 4 e0) so that a wrong scale, sign or layer exceeds the bound:
    the same comparison against transformers at 0.8 c, -c and the layers shifted by one is checked to fail it. At a
    small dose (c = 1, about a third of c*) the bound holds too, but there a wrong scale would pass it as well."""
    ids = seqs_of(smol, prompts[:1])[0]
    c = 10.0

    def tf(v, cc):
        with torch.no_grad(), steer(smol.model, v, cc):
            return smol.model(torch.tensor([ids])).logits[0].double().numpy()

    def rms(a):
        return float(np.sqrt(np.mean(a**2)))

    with served.open_gguf(smol, [ids], 1, None, smol.format(prompts[0])) as llama:
        base_l = llama.logits(ids, steered=False)
        llama.set_cvec(served.cvec_buffer(vec, 1.0, llama.file.n_layers))
        small_l = llama.logits(ids, steered=True) - base_l
        llama.set_cvec(served.cvec_buffer(vec, c, llama.file.n_layers))
        d_l = llama.logits(ids, steered=True) - base_l
    base_t = tf(None, 0.0)
    n = min(base_l.shape[1], base_t.shape[1])
    e0 = rms(base_l[:, :n] - base_t[:, :n])
    assert rms(small_l[:, :n] - (tf(vec, 1.0) - base_t)[:, :n]) <= 2 * e0
    d_t = tf(vec, c) - base_t
    assert rms(d_t) >= 4 * e0
    assert rms(d_l[:, :n] - d_t[:, :n]) <= 2 * e0
    shifted = dataclasses.replace(vec, layers=tuple(x + 1 for x in vec.layers))
    for wrong, cc in ((vec, 0.8 * c), (vec, -c), (shifted, c)):
        assert rms(d_l[:, :n] - (tf(wrong, cc) - base_t)[:, :n]) > 2 * e0


def test_a_vector_exported_at_layer_L_moves_block_L_in_llama_cpp(smol, tmp_path, prompts):
    """Read from llama.cpp's own graph (`l_out-L`, via its eval callback), with the file read by its own GGUF parser:
    block L-1's output is unchanged to the bit, block L's moved by exactly the exported direction (within one float32
    rounding of the add: |(s - b) - u| <= 2^-24 |s|), block L+1's by something else."""
    L = 7
    v = dosed(isokl.extract(smol, PAIRS, "mean_diff", layers=(L,)), 5.0)
    cv = read_cvec(export(v, "gguf", tmp_path / "v.gguf"))
    assert list(cv.layers) == [L]
    ids = seqs_of(smol, prompts[:1])[0]
    with served.open_gguf(smol, [ids], 1, None, smol.format(prompts[0])) as llama:
        llama.set_cvec(cv.buffer(llama.file.n_layers))
        s = llama.block_outputs(ids, (L - 1, L, L + 1), steered=True)
        b = llama.block_outputs(ids, (L - 1, L, L + 1), steered=False)
    assert np.array_equal(s[L - 1], b[L - 1])
    u = cv.layers[L].astype(np.float64)
    moved = s[L].astype(np.float64) - b[L]
    assert np.all(np.abs(moved - u) <= 2.0**-24 * np.abs(s[L]))
    assert np.abs(s[L + 1].astype(np.float64) - b[L + 1] - u).max() > 0.1


def test_the_exported_gguf_describes_itself_and_comes_back(smol, vec, tmp_path):
    v = dosed(vec, 3.25)
    path = export(v, "gguf", tmp_path / "v.gguf", alpha=1.5)
    cv = read_cvec(path)  # llama.cpp's parser sees the fields and loads the tensors
    f = {k.removeprefix("isokl."): x for k, x in cv.fields.items() if k.startswith("isokl.")}
    assert f["operation"].startswith("add") and "residual add" in f["hook"] and "0-based" in f["layer_indexing"]
    assert (f["c_star"], f["alpha"], f["c"], f["kl_target"]) == (3.25, 1.5, 1.5 * 3.25, 1.0)
    assert f["model_id"] == "smollm2-135m" and f["window"] == 20.0 and f["method"] == "mean_diff"
    assert cv.fields["general.architecture"] == "controlvector"
    for i, layer in enumerate(v.layers):
        assert np.array_equal(cv.layers[layer], (4.875 * v.directions[i]).float().numpy())
    assert gguf_fields(path)["c"] == 4.875  # and the gguf package reads the same
    back = from_file(smol, path)
    assert back.coeff == 3.25 and back.layers == v.layers and back.method == "mean_diff"
    assert torch.allclose(back.directions, v.directions, rtol=2**-22, atol=0)  # baked / c: two float32 roundings


def test_a_vector_for_another_model_or_a_malformed_file_fails_in_one_line(smol, vec, tmp_path):
    v = dosed(vec, 3.0)
    path = export(v, "gguf", tmp_path / "v.gguf")
    other = dataclasses.replace(v, model_id="gemma3-270m")
    with pytest.raises(VectorFileError, match="a vector for gemma3-270m, not smollm2-135m"):
        from_file(smol, export(other, "gguf", tmp_path / "other.gguf"))
    stranger = v.calibrated(dataclasses.replace(v.calibration, weights_sha="0123456789abcdef"))
    with pytest.raises(VectorFileError, match="weights fingerprint .* differs"):
        from_file(smol, export(stranger, "gguf", tmp_path / "stranger.gguf"))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(LlamaError, match="llama.cpp cannot read it"):
        read_cvec(cut)
    with pytest.raises(VectorFileError, match="not a readable GGUF"):
        from_file(smol, cut)
    with pytest.raises(LlamaError, match="cannot load it as a model"):
        Llama(cut)
    # the model file: another model's GGUF is refused before anything runs
    with pytest.raises(LlamaError, match="not the same model"):
        served.open_gguf(smol, [[1, 2]], 1, gguf_path(BUNDLED["qwen2.5-coder-0.5b"]))


@pytest.fixture(scope="module")
def ablation(smol):
    return dosed(isokl.extract(smol, PAIRS, "directional_ablation"), 1.0)


def test_an_ablation_vector_is_refused_where_only_a_fixed_vector_is_added(smol, ablation, prompts, tmp_path, monkeypatch):
    """llama.cpp adds c v for any vector: an ablation's rule h - c (h . v) v would never be applied there, so every
    entry point that would serve or export one refuses it (`Method.fixed_vector`) before anything runs."""

    def opened(*a, **k):
        raise AssertionError("llama.cpp opened the model before the ablation vector was refused")

    monkeypatch.setattr(served, "open_gguf", opened)
    for call in (
        lambda: isokl.calibrate(smol, ablation, prompts, runtime="llama.cpp", progress=False),
        lambda: isokl.check(smol, ablation, prompts, runtime="llama.cpp"),
        lambda: export(ablation, "gguf", tmp_path / "x.gguf"),
        lambda: export(ablation, "steering-vectors", tmp_path / "x.pt"),
    ):
        with pytest.raises(ValueError, match="only adds a fixed vector .* reads the activation"):
            call()
    from isokl.core.calibrate import calibrate_many

    with pytest.raises(ValueError, match='runtime="llama.cpp" only adds a fixed vector'):
        calibrate_many(smol, [ablation], prompts, runtime="llama.cpp", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_an_ablation_vector_in_llama_cpp_before_the_model_loads(smol, ablation, tmp_path, capsys, no_load):
    saved = ablation.save(tmp_path / "abl.safetensors")
    ptxt = tmp_path / "p.txt"
    ptxt.write_text("Tell me about your weekend.\nExplain how a bicycle works.\n")
    out = str(tmp_path / "v.safetensors")
    for args in (
        ["calibrate", "--method", "directional_ablation", "--runtime", "llama.cpp", "--no-judge", "--out", out],
        ["calibrate", "--method", "mean_diff,directional_ablation", "--runtime", "llama.cpp", "--no-judge", "--out", out],
        ["calibrate", "--vector", str(saved), "--runtime", "llama.cpp", "--out", out],
        ["check", str(saved), "--prompts", str(ptxt), "--runtime", "transformers,llama.cpp"],
        ["export", str(saved), "--format", "gguf", "--out", str(tmp_path / "v.gguf")],
    ):
        where = "--format gguf" if args[0] == "export" else "--runtime llama.cpp"
        run_refused(args, tmp_path, capsys, 1, where, "only adds a fixed vector", "directional_ablation")


def test_calibrate_in_llama_cpp_records_where(smol, vec, prompts):
    grid = isokl.calibrate(smol, vec, prompts, runtime="llama.cpp", progress=False)
    res = grid[0]
    cal = res.vector.calibration
    assert res.converged and abs(res.p95 - 1.0) <= 0.05
    assert cal.runtime.startswith("llama.cpp (llama-cpp-python ") and "Q4_1" in cal.weights and cal.quantization == "Q4_1"
    assert cal.dtype == "" and cal.tokenizer_sha and cal.weights_sha
    # the dose it found is the dose llama.cpp then measures on those prompts
    check = isokl.check(smol, res.vector, prompts, runtime="llama.cpp")
    assert check.p95 == pytest.approx(res.p95, rel=0, abs=1e-12) and check.weights == cal.weights


def test_cli_check_both_runtimes_and_the_exported_file(smol, vec, tmp_path, capsys):
    v = dosed(vec, 3.3)
    saved = v.save(tmp_path / "v.safetensors")
    gg = export(v, "gguf", tmp_path / "v.gguf")
    ptxt = tmp_path / "p.txt"
    ptxt.write_text("Tell me about your weekend.\nExplain how a bicycle works.\nWrite a short poem about rain.\n")
    args = ["check", "--prompts", str(ptxt), "--window", "8", "--threads", "2"]
    main_exit([*args[:1], str(saved), *args[1:], "--runtime", "transformers,llama.cpp", "--dtype", "float32,bfloat16"])
    out = capsys.readouterr().out
    assert "side by side" in out and "llama.cpp on SmolLM2-135M-Instruct.Q4_1.gguf" in out
    assert "transformers float32 (--dtype)" in out and "transformers bfloat16 (--dtype)" in out  # the three numbers
    ll_line = next(x for x in out.splitlines() if "llama.cpp on" in x)
    main_exit([*args[:1], str(gg), *args[1:], "--runtime", "llama.cpp"])
    out2 = capsys.readouterr().out
    p95 = float(next(x for x in out2.splitlines() if x.startswith("p95 = ")).split()[2])
    assert f"{p95:6.4f}" in ll_line  # the exported file measures what the vector measured
    assert main_exit(["check", str(saved), "--prompts", str(ptxt), "--gguf", str(gg)]) == 1
    one_line_error(capsys, "--gguf", "--runtime llama.cpp")


def test_without_the_binding_the_runtime_flag_fails_in_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    ptxt = tmp_path / "p.txt"
    ptxt.write_text("a\nb\n")
    assert main_exit(["calibrate", "--runtime", "llama.cpp", "--no-judge", "--out", str(tmp_path / "v.safetensors")]) == 1
    one_line_error(capsys, "--runtime llama.cpp", "llama-cpp-python", "isokl[llama]")
    assert not (tmp_path / "v.safetensors").exists()


def test_runtime_names_are_checked(capsys):
    assert main_exit(["calibrate", "--runtime", "vllm", "--no-judge"]) == 1
    one_line_error(capsys, "--runtime", "transformers, llama.cpp")


def test_cli_calibrate_in_llama_cpp_saves_where_it_ran(tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    code = main_exit(["calibrate", "--runtime", "llama.cpp", "--n-prompts", "2", "--window", "8", "--out", str(out)])
    printed = capsys.readouterr()
    assert code in (0, 2) and out.exists()  # 2: not converged, said on stderr (the solver's own outcome)
    assert "the judge measures in transformers, so it is skipped" in printed.err
    assert "llama.cpp on SmolLM2-135M-Instruct.Q4_1.gguf" in printed.out
    cal = isokl.Vector.load(out).calibration
    assert cal.runtime.startswith("llama.cpp") and cal.quantization == "Q4_1" and cal.window == 8


def test_more_prompts_than_one_batch_run_in_batches(smol, vec, prompts):
    """Prompts beyond the contexts' sequences run in batches (`Llama.evaluate`); c = 0 is still exactly 0 everywhere."""
    seqs = seqs_of(smol, prompts)
    with Llama(gguf_path(BUNDLED["smollm2-135m"]), n_ctx=512, n_seq=3) as llama:
        ev = served.evaluate(llama, smol, seqs, 6, vec, 0.0)
        assert ev.kl.shape == (4, 6) and len(ev.tokens) == 4 and bool(ev.valid[:, 0].all())
        assert torch.equal(ev.kl[ev.valid], torch.zeros(int(ev.valid.sum()), dtype=torch.float64))
        hot = served.evaluate(llama, smol, seqs, 6, vec, 6.0)
        assert float(hot.kl[hot.valid].min()) >= 0 and float(hot.kl[3][hot.valid[3]].max()) > 0


def test_a_model_that_is_not_bundled_needs_its_gguf_said_before_it_loads(six_layer_dir, tmp_path, capsys, no_load):
    args = ["calibrate", "--model", str(six_layer_dir), "--runtime", "llama.cpp", "--no-judge", "--out", str(tmp_path / "v")]
    run_refused(args, tmp_path, capsys, 1, "--gguf", "not a bundled model")
