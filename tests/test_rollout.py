"""Batched rollout KL against the one-prompt-at-a-time reference, EOS handling, bad input."""

import math

import pytest
import torch

from conftest import F32
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.model import prompts
from isokl.core.model.hooks import steer
from isokl.core.reference import reference_calibrate, reference_kl
from isokl.core.runtimes.rollout import NonFiniteKL, chunk_rows, evaluate, kl_rows, kl_stats, rollout, score_step


def _seqs(lm, n=4, seed=0):
    return lm.encode([lm.format(p) for p in prompts.calibration_prompts(seed, k=n)])


@pytest.mark.parametrize("method", ["mean_diff", "directional_ablation"])
def test_batched_kl_matches_reference(tiny_lm, method):
    vec = extract(tiny_lm, concept.extraction_pairs(0), method)
    seqs = _seqs(tiny_lm)
    assert len({len(s) for s in seqs}) > 1  # unequal lengths: left padding is exercised
    c = 2.0 if method == "directional_ablation" else 3.0
    T = 12
    ro = rollout(tiny_lm, seqs, T, vec, (c,))
    kl_ref, valid_ref = reference_kl(tiny_lm, seqs, vec, c, T)
    assert torch.equal(ro.valid.cpu(), valid_ref)
    assert torch.allclose(ro.kl.double().cpu(), kl_ref, atol=1e-4, rtol=0)
    assert ro.kl[ro.valid].max() > 1e-3  # a real, nonzero KL was compared
    a, b = kl_stats(ro.kl, ro.valid, c), kl_stats(kl_ref, valid_ref, c)
    assert abs(a.p95 - b.p95) < 1e-4
    assert len(a.per_t_p95) == T and len(a.per_t_max) == T


def test_several_doses_in_one_batch_match_separate_runs(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "pca")
    seqs = _seqs(llama_lm)
    together = evaluate(llama_lm, seqs, vec, (1.0, 3.0, 6.0), 10)
    for s in together:
        (alone,) = evaluate(llama_lm, seqs, vec, (s.c,), 10)
        assert math.isclose(s.p95, alone.p95, rel_tol=F32["rtol"], abs_tol=F32["atol"])
        assert s.per_t_max == pytest.approx(alone.per_t_max, rel=F32["rtol"], abs=F32["atol"])


def test_zero_dose_gives_zero_kl(llama_lm):
    """A c = 0 row batched beside a steered one is scored against its base twin like any row (a rollout of only
    c = 0 skips scoring): its KL is 0 to float32 rounding of the same logits in another batch row (conftest.F32)."""
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    zero, steered = evaluate(llama_lm, _seqs(llama_lm), vec, (0.0, 3.0), 8)
    assert 0.0 <= zero.max <= F32["atol"] and zero.p95 <= F32["atol"]
    assert steered.max > 1e3 * F32["atol"]  # the same rows move when steered


def test_tokens_after_eos_are_excluded(llama_lm):
    seqs = _seqs(llama_lm, n=2)
    ro = rollout(llama_lm, seqs, 6, None, (0.0,))
    first = int(ro.tokens[0, 1])  # declare the row's second token an end-of-turn id
    llama_lm.eos_ids = (first,)
    ro = rollout(llama_lm, seqs, 6, None, (0.0,))
    assert ro.valid[0].tolist()[:2] == [True, True]  # the EOS step itself is scored
    assert not ro.valid[0, 2:].any()


def test_prompt_longer_than_context_fails_early(llama_lm):
    seqs = [[5] * 250]
    with pytest.raises(ValueError, match="exceeds .* context of 256"):
        rollout(llama_lm, seqs, 10)


def test_kl_is_nan_safe_and_nonfinite_kl_raises(llama_lm):
    lp = torch.log_softmax(torch.tensor([[0.0, -math.inf, 1.0]]), -1)
    assert torch.isfinite(kl_rows(lp, lp)).all() and kl_rows(lp, lp).item() == 0.0
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    bad = type(vec)(**{**vec.__dict__, "directions": torch.full_like(vec.directions, float("nan"))})
    with pytest.raises(NonFiniteKL, match="lower the dose"):
        rollout(llama_lm, _seqs(llama_lm, n=2), 4, bad, (1.0,))


def test_fast_and_simple_calibration_agree(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    cal = prompts.calibration_prompts(0)
    fast = calibrate_iso_kl(llama_lm, vec, cal, T=10, progress=False)
    c_ref, p_ref, _ = reference_calibrate(llama_lm, vec, _seqs(llama_lm), 10)
    assert fast.converged and abs(p_ref - 1) <= 0.05
    # both c lie where p95 is within tolerance; check each against the *other* path's statistic
    (at_ref,) = evaluate(llama_lm, _seqs(llama_lm), vec, (c_ref,), 10)
    assert abs(at_ref.p95 - 1) <= 0.05
    (at_star,) = [h for h in fast.history if h.c == fast.c_star]  # the reported p95 is the one measured at c*
    assert at_star.p95 == fast.p95
    assert len(fast.history[0].per_t_p95) == 10


def test_must_exceed_count_bounds_the_quantile():
    import numpy as np

    from isokl.core.stats.statistic import P95

    must_exceed_count = P95.must_exceed
    rng = np.random.default_rng(0)
    for m in (5, 20, 80, 200):
        need = must_exceed_count(m)
        for _ in range(200):
            vals = rng.exponential(size=m)
            x = np.sort(vals)[-need]  # exactly `need` values >= x (ties aside)
            assert np.quantile(vals, 0.95) >= x
            if need > 1:  # and one fewer would not be enough in general
                y = np.sort(vals)[-(need - 1)]
                assert np.quantile(vals, 0.95) <= y


def test_early_stop_reports_a_true_lower_bound(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    seqs = _seqs(llama_lm)
    (full,) = evaluate(llama_lm, seqs, vec, (8.0,), 16)
    ro = rollout(llama_lm, seqs, 16, vec, (8.0,), stop_above=1.05)
    (cut,) = evaluate(llama_lm, seqs, vec, (8.0,), 16, stop_above=1.05)
    assert full.p95 > 1.05 and full.complete  # this dose overshoots
    assert ro.stopped and ro.steps < 16  # ... and the rollout knew early
    assert not cut.complete and 1.05 <= cut.p95 <= full.p95


def test_several_doses_per_solver_round(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    res = calibrate_iso_kl(llama_lm, vec, prompts.calibration_prompts(0), T=10, progress=False, per_round=3)
    assert res.converged and abs(res.p95 - 1) <= 0.05
    assert res.evaluations == len(res.history)
    (again,) = evaluate(llama_lm, _seqs(llama_lm), vec, (res.c_star,), 10)
    assert again.p95 == pytest.approx(
        res.p95, rel=F32["rtol"], abs=F32["atol"]
    )  # the reported p95 is the one at c*, whatever batch it came from


def test_score_step_in_chunks_matches_log_softmax():
    V, r = 300_000, 3  # a vocabulary this large is scored one row at a time on CPU
    assert chunk_rows(V, "cpu") == 1
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * r, V, generator=g) * 3
    logits[r:] = logits[:r] + 0.5 * torch.randn(r, V, generator=g)
    logits[1, 7] = logits[r + 1, 7] = -math.inf  # -inf in both rows: the chunk is redone term by term
    nxt, logp, kl, logq = score_step(logits, r, twins=True)
    lp, lq = torch.log_softmax(logits[:r], -1), torch.log_softmax(logits[r:], -1)
    assert torch.equal(nxt, lp.argmax(-1))
    assert torch.allclose(logp, lp.gather(-1, nxt[:, None])[:, 0], atol=1e-4)
    assert torch.allclose(logq, lq.gather(-1, nxt[:, None])[:, 0], atol=1e-4)
    assert torch.isfinite(kl).all() and torch.allclose(kl, kl_rows(lp, lq), atol=1e-4)
    assert kl.min() > 0.05  # the rows differ, so the check above compares real values
    nxt1, logp1, kl1, logq1 = score_step(logits, r, twins=False)
    assert torch.equal(nxt1, nxt) and torch.equal(logp1, logp) and kl1 is None and logq1 is None
    logits[2, 0] = float("nan")  # NaN logits stay NaN (the rollout then raises NonFiniteKL)
    assert torch.isnan(score_step(logits, r, twins=True)[2][2])


def _same_rollout(a, b):
    assert a.steps == b.steps and a.stopped == b.stopped
    assert torch.equal(a.valid, b.valid)
    assert torch.equal(a.tokens[a.valid], b.tokens[b.valid])
    assert torch.allclose(a.kl[a.valid], b.kl[b.valid], **F32)
    assert torch.allclose(a.logp[a.valid], b.logp[b.valid], **F32)
    assert torch.allclose(a.logp_base[a.valid], b.logp_base[b.valid], **F32)


@pytest.mark.parametrize("source", ["same dose", "nearby dose", "far dose", "random tokens", "short draft"])
def test_a_draft_never_changes_the_rollout(tiny_lm, source):
    vec = extract(tiny_lm, concept.extraction_pairs(0), "mean_diff")
    seqs, T, c = _seqs(tiny_lm), 12, 3.0
    plain = rollout(tiny_lm, seqs, T, vec, (c,))
    g = torch.Generator().manual_seed(1)
    draft = {
        "same dose": lambda: plain.tokens,
        "nearby dose": lambda: rollout(tiny_lm, seqs, T, vec, (c * 1.05,)).tokens,
        "far dose": lambda: rollout(tiny_lm, seqs, T, vec, (c * 3,)).tokens,
        "random tokens": lambda: torch.randint(0, 256, plain.tokens.shape, generator=g),
        "short draft": lambda: plain.tokens[:, :5],
    }[source]()
    calls = []
    hook = tiny_lm.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        _same_rollout(rollout(tiny_lm, seqs, T, vec, (c,), draft=draft), plain)
    finally:
        hook.remove()
    if source == "same dose":
        assert len(calls) == 4  # base prompts, steered prompts, drafted passes of 4 then 7 tokens: no single steps
    if source == "random tokens":
        assert len(calls) >= T  # a wrong first token: decoding resumed at once


def test_a_draft_keeps_eos_early_stop_and_several_doses(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    seqs = _seqs(llama_lm)
    coeffs = (2.0, 8.0)
    plain = rollout(llama_lm, seqs, 16, vec, coeffs, stop_above=1.05)
    assert plain.stopped  # both doses overshoot 1.05 early: the rollout stops before T
    _same_rollout(rollout(llama_lm, seqs, 16, vec, coeffs, stop_above=1.05, draft=plain.tokens), plain)
    ended = rollout(llama_lm, seqs, 10, vec, coeffs)
    llama_lm.eos_ids = (int(ended.tokens[0, 3]),)  # row 0 now ends at its fourth token
    plain = rollout(llama_lm, seqs, 10, vec, coeffs)
    assert not plain.valid[0, 4:].any()
    _same_rollout(rollout(llama_lm, seqs, 10, vec, coeffs, draft=ended.tokens), plain)
    with pytest.raises(ValueError, match="draft has 3 rows"):
        rollout(llama_lm, seqs, 10, vec, coeffs, draft=ended.tokens[:3])


def test_forks_match_full_forwards_and_must_descend(llama_lm):
    from isokl.core.forks import fork_rollout
    from isokl.core.model.models import forward

    vec = extract(llama_lm, concept.extraction_pairs(0), "pca")
    seqs, suffix = _seqs(llama_lm, n=3), [5, 6, 7]
    br = fork_rollout(llama_lm, seqs, 8, vec, (0.0, 2.0))
    for t in (8, 3, 0):
        got = br.logits_after(t, suffix)
        for row, seq in enumerate(br.rollout.layout.repeat(seqs)):
            c = br.rollout.coeffs[row // len(seqs)]
            full = torch.tensor([seq + br.rollout.tokens[row, :t].tolist() + suffix])
            with steer(llama_lm.model, vec, c), torch.no_grad():
                want = forward(llama_lm.model, full, torch.ones_like(full), torch.arange(full.shape[1])[None], keep=1)[0, -1]
            assert torch.allclose(got[row], want, atol=1e-9), (t, row)
    with pytest.raises(ValueError, match="descending t"):
        br.logits_after(5, suffix)


def test_calibration_with_drafts_takes_the_same_steps(tiny_lm):
    vec = extract(tiny_lm, concept.extraction_pairs(0), "mean_diff")
    cal = prompts.calibration_prompts(0)
    a = calibrate_iso_kl(tiny_lm, vec, cal, T=10, progress=False, draft=True)
    b = calibrate_iso_kl(tiny_lm, vec, cal, T=10, progress=False, draft=False)
    assert a.status == b.status and a.evaluations == b.evaluations
    assert [h.c for h in a.history] == pytest.approx([h.c for h in b.history], rel=1e-9)
    assert [h.p95 for h in a.history] == pytest.approx([h.p95 for h in b.history], rel=F32["rtol"], abs=F32["atol"])


def test_a_shared_base_prefill_gives_the_same_rollout(tiny_lm):
    from isokl.core.runtimes.rollout import prefill_base

    vec = extract(tiny_lm, concept.extraction_pairs(0), "pca")
    seqs = _seqs(tiny_lm)
    plain = rollout(tiny_lm, seqs, 8, vec, (1.0, 4.0))
    _same_rollout(rollout(tiny_lm, seqs, 8, vec, (1.0, 4.0), base=prefill_base(tiny_lm, seqs)), plain)
    other = prefill_base(tiny_lm, _seqs(tiny_lm, seed=1))  # another prompt set's prefill is not used
    _same_rollout(rollout(tiny_lm, seqs, 8, vec, (1.0, 4.0), base=other), plain)


def test_the_cpu_output_layer_product_matches_linear():
    from conftest import byte_tokenizer, tiny_model
    from isokl.core.model.models import from_module

    model = tiny_model("qwen2", dtype=torch.float32)
    head = model.get_output_embeddings()
    g = torch.Generator().manual_seed(0)
    lm = from_module(model, byte_tokenizer(), column_product=True)  # swaps in the column product
    for rows in (1, 2, 8, 16, 17, 40):
        x = torch.randn(rows, 1, head.in_features, generator=g)
        want = torch.nn.functional.linear(x, head.weight)
        got = model.get_output_embeddings()(x)
        assert got.shape == want.shape and got.is_contiguous()
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert model.get_output_embeddings().forward.func.__name__ == "_column_product"
    vec = extract(lm, concept.extraction_pairs(0), "mean_diff")
    ro = rollout(lm, _seqs(lm), 8, vec, (3.0,))  # 8 rows: the column product runs inside the rollout
    kl_ref, valid_ref = reference_kl(lm, _seqs(lm), vec, 3.0, 8)
    assert torch.equal(ro.valid.cpu(), valid_ref)
    assert torch.allclose(ro.kl.double().cpu(), kl_ref, atol=1e-4, rtol=0)


def test_a_known_coefficient_as_start_converges_at_once(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    cal = prompts.calibration_prompts(0)
    first = calibrate_iso_kl(llama_lm, vec, cal, T=10, progress=False)
    again = calibrate_iso_kl(llama_lm, vec, cal, T=10, progress=False, start=first.c_star)
    assert first.converged and first.evaluations > 1
    assert again.evaluations == 1 and again.c_star == first.c_star
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="start must be"):
            calibrate_iso_kl(llama_lm, vec, cal, T=10, progress=False, start=bad)
