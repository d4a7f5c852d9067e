"""Each estimator of the report (`report.estimate`) on rows small enough to work out by hand, read through the
index (`report.index.Study`) as text rows, the way `records.load` gives them."""

import math

import pytest

from isokl.report import estimate as est
from isokl.report.index import Study, base_key
from isokl.study import records

M, A, CTRL = "m", "a", "random_direction"


def _prov(method, seed, alpha):
    base = method == records.BASE
    return dict(
        model=M,
        concept="",
        method=method,
        seed="" if base else str(seed),
        window="" if base else "20",
        code_version="x",
        time="t",
        alpha=repr(0.0 if base else alpha),
        c="1.0",
    )


def _data() -> dict[str, list[dict]]:
    d: dict[str, list[dict]] = {name: [] for name in records.FILES}
    for meth in (A, CTRL):
        for seed in (0, 1):
            d["calibration"].append(
                dict(
                    {k: v for k, v in _prov(meth, seed, 1.0).items() if k not in ("alpha", "c")},
                    layers="1 2",
                    c_star="2.0",
                    c_star_lo="1.5",
                    c_star_hi="2.5",
                    converged="1",
                    status="converged",
                    calib_p95="1.0",
                    holdout_p95="1.0",
                    evaluations="3",
                    seconds="1.5",
                    **dict.fromkeys(records.HOLDOUT_COLUMNS, "1.0"),
                )
            )
    # held-out KL: seed 0 at 1 nat per token, seed 1 at 3 nats; one invalid token with a huge value (after EOS)
    for seed, level in ((0, 1.0), (1, 3.0)):
        for p in ("g0", "g1"):
            for t in (1, 2, 3):
                d["trajectory"].append(dict(_prov(A, seed, 1.0), prompt=p, t=str(t), kl=repr(level), valid="1"))
        d["trajectory"].append(dict(_prov(A, seed, 1.0), prompt="g2", t="1", kl=repr(level), valid="1"))
        d["trajectory"].append(dict(_prov(A, seed, 1.0), prompt="g2", t="2", kl="99.0", valid="0"))
    # base NLL 1 nat per token; steered 2 (seed 0) and 4 (seed 1); distinct-3 marks loops below 0.5
    for p in ("g0", "g1"):
        d["nll"].append(dict(_prov(records.BASE, None, 0.0), prompt=p, nll_sum="10", n_tokens="10", distinct3="0.9"))
    for seed, nll, dist in ((0, "20", ("0.2", "0.8")), (1, "40", ("0.3", "0.4"))):
        for p, x in zip(("g0", "g1"), dist, strict=True):
            d["nll"].append(dict(_prov(A, seed, 1.0), prompt=p, nll_sum=nll, n_tokens="10", distinct3=x))
    # target logits: base 1, 2; the method +1 (seed 0) and +3 (seed 1); the control +0.5 in both seeds
    for probe, b in (("s0", 1.0), ("s1", 2.0)):
        d["target"].append(dict(_prov(records.BASE, None, 0.0), probe=probe, target_logit=repr(b)))
        for seed, up in ((0, 1.0), (1, 3.0)):
            d["target"].append(dict(_prov(A, seed, 1.0), probe=probe, target_logit=repr(b + up)))
            d["target"].append(dict(_prov(CTRL, seed, 1.0), probe=probe, target_logit=repr(b + 0.5)))
    # pmass: base 0.8 everywhere; seed 0: q0 0.6 -> 0.4, q1 0.6 then censored; seed 1: 0.7 everywhere
    for q in ("q0", "q1"):
        for t in (0, 5):
            d["pmass"].append(
                dict(_prov(records.BASE, None, 0.0), prompt=q, fork_t=str(t), pmass="0.8", p_true="0.5", censored="0")
            )
    for seed, q, t, v, cens in [
        (0, "q0", 0, "0.6", "0"),
        (0, "q0", 5, "0.4", "0"),
        (0, "q1", 0, "0.6", "0"),
        (0, "q1", 5, "0.9", "1"),
        (1, "q0", 0, "0.7", "0"),
        (1, "q0", 5, "0.7", "0"),
        (1, "q1", 0, "0.7", "0"),
        (1, "q1", 5, "0.7", "0"),
    ]:
        d["pmass"].append(dict(_prov(A, seed, 1.0), prompt=q, fork_t=str(t), pmass=v, p_true="0.5", censored=cens))
    return d


@pytest.fixture(scope="module")
def s():
    return Study(_data())


def _key(seed):
    return (M, A, seed, 20)


def test_rows_are_typed_once(s):
    assert s.seeds == [0, 1] and s.windows == [20] and s.methods == [A] and s.controls == [CTRL]
    c = s.cells(M, A, seed=0)[0]
    assert c["c_star"] == 2.0 and c["converged"] is True and c["evaluations"] == 3 and c["seed"] == 0
    assert s.keys(M, A) == [_key(0), _key(1)] and base_key(M) == (M, records.BASE, None, None)
    typed = records.typed("nll", [{"seed": "", "nll_sum": "", "n_tokens": "7", "prompt": "p"}])[0]
    assert typed["seed"] is None and math.isnan(typed["nll_sum"]) and typed["n_tokens"] == 7 and typed["prompt"] == "p"


def test_kl_statistics_skip_invalid_tokens(s):
    assert est.pooled_p95(s, _key(0), 1.0) == 1.0  # the invalid 99 is not pooled
    assert est.prompt_p95(s, _key(1), 1.0, "g2") == 3.0 and math.isnan(est.prompt_p95(s, _key(1), 1.0, "nope"))
    assert list(est.cumulative_p95(s, _key(0), 1.0)) == [1.0, 1.0, 1.0]
    assert list(est.per_t_p95(s, 1.0)[_key(1)]) == [3.0, 3.0, 3.0]
    assert est.mean_kl(s, M, A, 1.0).mean == pytest.approx(2.0)  # seeds 1 and 3 nats per token
    assert est.seed_range(s, M, A, 20, lambda ks: est.pooled_p95(s, ks[0], 1.0)) == (2.0, 1.0, 3.0)


def test_nll_ratio_and_excess(s):
    assert est.cell_nll_ratios(s, 1.0) == {_key(0): pytest.approx(2.0), _key(1): pytest.approx(4.0)}
    assert est.nll_ratio(s, M, A, 1.0).mean == pytest.approx(3.0)
    assert est.excess_nll(s, M, A, 1.0).mean == pytest.approx(2.0)  # (2 - 1 + 4 - 1) / 2


def test_repetitive_share(s):
    assert est.repetitive(s, M, A, 1.0).mean == pytest.approx(0.75)  # seed 0: 1 of 2 loops, seed 1: 2 of 2
    assert est.repetitive(s, M, records.BASE, 0.0).mean == 0.0


def test_delta_logit_and_its_control(s):
    e = est.delta_logit(s, M, A, 1.0)
    assert e.mean == pytest.approx(2.0) and e.n_units == 2 and e.n_values == 4
    assert est.cell_delta_logit(s, _key(0)).mean == pytest.approx(1.0)
    assert est.delta_vs_control(s, M, A, CTRL).mean == pytest.approx(1.5)  # (1 - 0.5 + 3 - 0.5) / 2


def test_branch_pmass(s):
    # seed 0: uncensored 0.6, 0.4, 0.6 (mean 0.5333) against the base's 0.8; seed 1: 0.7 against 0.8
    assert est.pmass_change(s, M, A, 1.0).mean == pytest.approx(((1.6 / 3 - 0.8) + (0.7 - 0.8)) / 2)
    assert est.cell_pmass_change(s, _key(0), 1.0) == pytest.approx(1.6 / 3 - 0.8)
    assert est.pmass_paired(s, M, A, 1.0).mean == pytest.approx((-0.2 + 0.0) / 2)  # q1's fork 5 is censored
    assert sorted(est.pmass_curve(s, M, A, 1.0)[5]) == pytest.approx([0.4, 0.7, 0.7])
    assert est.pmass_counts(s, M, A, 1.0) == 7 and est.base_pmass(s, M) == pytest.approx(0.8)
    e, n = est.pmass_at(s, M, A, 1.0, 0)
    assert e.mean == pytest.approx(0.65) and n == 4
