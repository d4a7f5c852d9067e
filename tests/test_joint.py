"""Joint calibration (`calibrate_many`): several vectors in one batch per solver round give each vector the result of
its own calibration; per-row hooks leave c = 0 rows and rows outside every vector exactly the base model."""

import dataclasses
import math

import pytest
import torch

from conftest import F32, byte_tokenizer, grid_exit, tiny_model
from isokl.core.calibrate import calibrate_iso_kl, calibrate_many
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.model import prompts
from isokl.core.model.hooks import Layout, steer_rows
from isokl.core.model.models import forward, from_module, left_pad, pad_id
from isokl.core.runtimes.rollout import NonFiniteKL, rollout, rollout_many

T = 10


@pytest.fixture(params=["llama", "gemma3"])
def lm6(request):
    """Six blocks, so that vectors can sit at different layers."""
    return from_module(tiny_model(request.param, layers=6), byte_tokenizer(), id=f"tiny6-{request.param}")


def _mixed(lm):
    """Additive and ablation rules at different (and overlapping) layers."""
    pairs = concept.extraction_pairs(0)
    return [
        extract(lm, pairs, "mean_diff", layers=(1, 2)),
        extract(lm, pairs, "directional_ablation", layers=(3,)),
        extract(lm, pairs, "pca", layers=(2, 3, 4)),
        extract(lm, pairs, "random_direction", layers=(4, 5), seed=0),
    ]


def _same(joint, single):
    assert joint.status == single.status and joint.evaluations == single.evaluations
    assert [h.c for h in joint.history] == pytest.approx([h.c for h in single.history], rel=1e-9)
    assert [h.complete for h in joint.history] == [h.complete for h in single.history]
    for a, b in zip(joint.history, single.history, strict=True):
        assert a.p95 == pytest.approx(b.p95, rel=F32["rtol"], abs=F32["atol"])
        assert a.per_t_max == pytest.approx(b.per_t_max, rel=F32["rtol"], abs=F32["atol"], nan_ok=True)
    assert joint.c_star == pytest.approx(single.c_star, rel=1e-9)
    assert joint.c_interval.lo == pytest.approx(single.c_interval.lo, rel=1e-6, nan_ok=True)
    assert joint.c_interval.hi == pytest.approx(single.c_interval.hi, rel=1e-6, nan_ok=True)
    assert joint.vector.calibration == dataclasses.replace(
        single.vector.calibration, p95=joint.vector.calibration.p95, c_lo=joint.c_interval.lo, c_hi=joint.c_interval.hi
    )


@pytest.mark.parametrize("per_round", [1, 2])
def test_joint_equals_single_for_a_mixed_set(lm6, per_round):
    vecs = _mixed(lm6)
    cal = prompts.calibration_prompts(0)
    # one vector starts 50x above its c*, so its first doses overshoot and stop early (its block, not the batch)
    first = calibrate_iso_kl(lm6, vecs[2], cal, T=T, progress=False).c_star
    starts = [None, None, 50 * first, None]
    single = [
        calibrate_iso_kl(lm6, v, cal, T=T, progress=False, per_round=per_round, start=s)
        for v, s in zip(vecs, starts, strict=True)
    ]
    joint = calibrate_many(lm6, vecs, cal, T=T, progress=False, per_round=per_round, start=starts)
    assert any(not h.complete for h in single[2].history)  # the early stop was exercised
    if per_round == 1:
        assert len({r.evaluations for r in single}) > 1  # vectors finish in different rounds
    for j, s in zip(joint.results, single, strict=True):
        _same(j, s)
        assert j.converged


def test_a_finished_vector_leaves_the_batch(llama_lm):
    pairs = concept.extraction_pairs(0)
    vecs = [extract(llama_lm, pairs, "mean_diff"), extract(llama_lm, pairs, "directional_ablation")]
    cal = prompts.calibration_prompts(0)
    c_known = calibrate_iso_kl(llama_lm, vecs[0], cal, T=T, progress=False).c_star
    joint = calibrate_many(llama_lm, vecs, cal, T=T, progress=False, start=[c_known, None])  # vector 0 done at once
    first, second = joint.results
    assert first.evaluations == 1 and second.evaluations > 1
    assert joint.rounds[0].vectors == (0, 1) and all(r.vectors == (1,) for r in joint.rounds[1:])
    n = len(cal)
    assert [r.rows for r in joint.rounds] == [2 * n * r.doses for r in joint.rounds]  # steered rows + their twins
    assert [r.doses for r in joint.rounds] == [2] + [1] * (len(joint.rounds) - 1)
    assert len(joint.rounds) == second.evaluations


def test_a_non_finite_kl_ends_only_its_vector(llama_lm):
    pairs = concept.extraction_pairs(0)
    good = [extract(llama_lm, pairs, "mean_diff"), extract(llama_lm, pairs, "pca", layers=(2,))]
    bad = extract(llama_lm, pairs, "directional_ablation", layers=(3,))
    bad = dataclasses.replace(bad, directions=torch.full_like(bad.directions, float("nan")))
    cal = prompts.calibration_prompts(0)
    joint = calibrate_many(llama_lm, [good[0], bad, good[1]], cal, T=T, progress=False)
    a, broken, b = joint.results
    assert broken.status == "non_finite" and not broken.converged
    assert broken.error.startswith("directional_ablation at layer 3: KL is nan at prompt")
    assert math.isnan(broken.c_star) and broken.evaluations == 0
    for j, v in ((a, good[0]), (b, good[1])):
        _same(j, calibrate_iso_kl(llama_lm, v, cal, T=T, progress=False))
    with pytest.raises(NonFiniteKL, match="directional_ablation at layer 3: KL is nan"):
        calibrate_iso_kl(llama_lm, bad, cal, T=T, progress=False)
    seqs = llama_lm.encode([llama_lm.format(p) for p in cal])
    with pytest.raises(NonFiniteKL, match="^directional_ablation at layer 3: KL is nan"):
        rollout_many(llama_lm, seqs, 4, [good[0], bad], [(1.0,), (1.0,)])


def test_per_row_hooks_leave_zero_and_unsteered_rows_exactly_base(lm6):
    a, b = _mixed(lm6)[:2]
    seqs = lm6.encode([lm6.format(p) for p in prompts.calibration_prompts(0, k=2)])
    ids, mask, pos = left_pad(seqs * 3, pad_id(lm6), lm6.device)  # 6 rows: a's block, b's block, rows of no vector
    with torch.no_grad():
        base = forward(lm6.model, ids, mask, pos)
        c = torch.tensor([0.0, 3.0, 2.0, 0.0, 5.0, 5.0], dtype=torch.float64)  # rows 4, 5: outside every part
        with steer_rows(lm6.model, [(a, slice(0, 2)), (b, slice(2, 4))], c):
            steered = forward(lm6.model, ids, mask, pos)
    for row in (0, 3, 4, 5):
        assert torch.equal(steered[row], base[row])
    for row in (1, 2):
        assert not torch.allclose(steered[row], base[row])


def test_joint_rollout_rows_equal_their_own_rollouts(lm6):
    vecs = _mixed(lm6)
    seqs = lm6.encode([lm6.format(p) for p in prompts.calibration_prompts(0)])
    doses = [(1.0, 4.0), (2.0,), (0.5,), (3.0, 0.0)]
    ro = rollout_many(lm6, seqs, 8, vecs, doses)
    assert ro.layout.blocks == (2, 1, 1, 2)
    k = 0
    for v, cs in zip(vecs, doses, strict=True):
        alone = rollout(lm6, seqs, 8, v, cs)
        for i in range(len(cs)):
            assert torch.equal(ro.tokens[ro.rows(k)], alone.tokens[alone.rows(i)])
            assert torch.equal(ro.valid[ro.rows(k)], alone.valid[alone.rows(i)])
            torch.testing.assert_close(ro.kl[ro.rows(k)], alone.kl[alone.rows(i)], rtol=F32["rtol"], atol=F32["atol"])
            k += 1


def test_layout_blocks_and_bad_input(llama_lm):
    lay = Layout((1.0, 2.0, 3.0, 4.0, 5.0), n=3, sizes=(2, 3))
    assert lay.blocks == (2, 3) and list(lay.doses(1)) == [2, 3, 4]
    assert lay.block(0) == slice(0, 6) and lay.block(1) == slice(6, 15)
    assert [lay.block_of(k) for k in range(5)] == [0, 0, 1, 1, 1]
    assert Layout((1.0,), n=2).blocks == (1,)
    with pytest.raises(ValueError, match="do not add up"):
        Layout((1.0, 2.0), n=2, sizes=(1, 2))
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    cal = prompts.calibration_prompts(0)
    with pytest.raises(ValueError, match="at least one vector"):
        calibrate_many(llama_lm, [], cal)
    with pytest.raises(ValueError, match="one per vector"):
        calibrate_many(llama_lm, [vec, vec], cal, start=[1.0])
    with pytest.raises(ValueError, match="one tuple of doses per vector"):
        rollout_many(llama_lm, [[1, 2]], 4, [vec], [(1.0,), (2.0,)])


# ---- the CLI grid --------------------------------------------------------------------------------------------------


def test_calibrate_a_grid_writes_a_vector_each_and_a_table(six_layer_dir, tmp_path, capsys, monkeypatch):
    import csv

    from isokl import cli
    from isokl.core.formats.vector import Vector

    monkeypatch.chdir(tmp_path)
    args = ["calibrate", "--model", str(six_layer_dir), "--method", "mean_diff,directional_ablation", "--layers", "1-2/3"]
    code = cli.main([*args, "--window", "6", "--n-prompts", "4", "--no-judge"])
    out = capsys.readouterr().out
    assert code == grid_exit(tmp_path / "grid")
    rows = list(csv.DictReader((tmp_path / "grid" / "grid.csv").read_text().splitlines()))
    assert [(r["method"], r["layers"]) for r in rows] == [
        ("mean_diff", "1..2"),
        ("mean_diff", "3"),
        ("directional_ablation", "1..2"),
        ("directional_ablation", "3"),
    ]
    for r in rows:
        v = Vector.load(tmp_path / "grid" / r["file"])
        assert v.method == r["method"] and v.calibration.n_prompts == 4 and v.calibration.window == 6
        assert float(r["c_star"]) == pytest.approx(v.coeff, rel=1e-5)  # printed with 6 significant digits
        assert r["status"] == v.calibration.status and int(r["evaluations"]) == v.calibration.evaluations
        assert f"| {r['method']} | {r['layers']} | {r['c_star']} |" in out
    assert (code == 0) == all(r["status"] == "converged" for r in rows)
    assert (tmp_path / "grid" / "grid.md").read_text().count("\n| ") == 2 + len(rows)  # header, rule, one line per vector


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "pca,pca"], ("--method/--layers", "repeats")),
        (["--method", "pca,mean_diff", "--out", "g.safetensors"], ("--out", "folder")),
        (["--method", "pca", "--layers", "1-2/x"], ("--layers", "'x'")),
        (["--method", "pca,mean_diff", "--vector", "v.safetensors"], ("--method", "vector file")),
        (["--method", "pca,mean_diff", "--start", "2"], ("--start", "own scales")),
    ],
)
def test_bad_grid_flags_fail_in_one_line_before_a_model_loads(extra, words, tmp_path, capsys, no_load, monkeypatch):
    from isokl import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["calibrate", *extra]) == 1
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "grid").exists()


# ---- the sweep calibrates a (model, seed, window)'s methods and its control together --------------------------------


def test_a_sweep_calibrates_a_seeds_methods_and_control_jointly(tmp_path):
    import io

    from isokl.study import records
    from isokl.study.progress import Progress
    from isokl.study.sweep import SweepConfig, cell_prompts, cell_vector, run_sweep

    def loader(model_id, device="cpu"):
        return from_module(tiny_model("llama", seed=7), byte_tokenizer(), id=model_id)

    cfg = SweepConfig(
        models="tiny-a", methods="mean_diff,directional_ablation", control="random_direction", seeds="0", windows="6"
    )
    cfg = dataclasses.replace(cfg, n_heldout="3", horizon=10, out=str(tmp_path / "s"))
    phases: list[str] = []

    class Spy(Progress):
        def phase(self, cell, label):
            phases.append(label)

    run_sweep(cfg, loader=loader, progress=Spy(3, 0, stream=io.StringIO()))
    assert any(p.startswith("calibrating 3 methods jointly") for p in phases)
    assert not any(p == "calibrating" for p in phases)  # no cell calibrated alone
    got = {r["method"]: r for r in records.load(tmp_path / "s")["calibration"]}
    lm = loader("tiny-a")
    methods = ["mean_diff", "directional_ablation", "random_direction"]
    plan = cfg.resolve(models=False)
    joint = calibrate_many(lm, [cell_vector(lm, m, 0, plan) for m in methods], cell_prompts(plan, 0), T=6, progress=False)
    for m, res in zip(methods, joint.results, strict=True):
        assert float(got[m]["c_star"]) == res.c_star and int(got[m]["evaluations"]) == res.evaluations
