"""The judge: its rows are the study's measures for the same vectors (one batch or one at a time), the concept score
reads the text as defined (docs/decisions.md, "The judge"), the leaderboard ranks, flags and says "not measured", and
an interrupted grid leaves no table."""

import csv
import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from conftest import F32, byte_tokenizer, grid_exit, one_line_error, tiny_model
from isokl.core.calibrate import calibrate_many
from isokl.core.extract import extract
from isokl.core.formats.concept import Concept
from isokl.core.model.files import is_temporary
from isokl.core.model.hooks import capture
from isokl.core.model.models import forward, from_module, left_pad, pad_id
from isokl.report import leaderboard, ranking
from isokl.study import judge as J
from isokl.study.measures import HeldOut, held_out_many, nll, target, trajectory
from isokl.study.metrics import concept_axis, loo_separation, reference_block, text_projection


@pytest.fixture(scope="module")
def lm6():
    return from_module(tiny_model("llama", seed=3, layers=6), byte_tokenizer(), id="tiny-j")


@pytest.fixture(scope="module")
def concept():
    return Concept.load("sentiment")


@pytest.fixture(scope="module")
def calibrated(lm6, concept):
    pairs = concept.pairs(0)
    vecs = [extract(lm6, pairs, "mean_diff", layers=(1, 2)), extract(lm6, pairs, "directional_ablation", layers=(3,))]
    ctrl = J.control_vectors(lm6, vecs, pairs, seed=0)
    joint = calibrate_many(lm6, [*vecs, *ctrl.values()], concept.calibration(0, 4), T=6, progress=False)
    return joint.results[:2], dict(zip(ctrl, joint.results[2:], strict=True))


N = {"heldout_generic": 5, "heldout_truefalse": 0, "heldout_sentiment": 4}


def test_one_batch_gives_each_vectors_own_rows(lm6, concept, calibrated):
    """held_out_many (one rollout_many and one target forward for all vectors) = each vector's own HeldOut."""
    results, controls = calibrated
    every = [*results, *controls.values()]
    items = [(r.vector, (r.c_star, 2 * r.c_star), (1.0, 2.0), {"method": J.name(r.vector)}) for r in every]
    joint = held_out_many(lm6, items, N, 8, concept)
    for (v, cs, al, prov), h in zip(items, joint, strict=True):
        alone = HeldOut(lm6, v, cs, al, N, 8, prov, concept=concept)
        assert "generic" in h.joint and "generic" not in alone.joint
        for fn in (trajectory, nll, target):
            got, want = fn(h), fn(alone)
            assert len(got) == len(want) > 0
            for g, w in zip(got, want, strict=True):
                assert {k: x for k, x in g.items() if isinstance(x, str)} == {k: x for k, x in w.items() if isinstance(x, str)}
                for col in ("kl", "nll_sum", "target_logit"):
                    if col in g:
                        assert g[col] == pytest.approx(w[col], rel=F32["rtol"], abs=F32["atol"])
                assert g.get("valid") == w.get("valid") and g.get("n_tokens") == w.get("n_tokens")


def test_text_projection_is_the_defined_mean_over_the_continuation(tiny_lm, concept):
    """By hand, one full forward per prompt: the base model reads prompt + continuation; the continuation's block outputs
    projected on the unit pairs' mean difference, averaged over its positions, over the pairs' separation (the judge
    feeds only the continuations, on the prompts' KV cache)."""
    lm6 = tiny_lm
    pairs = concept.pairs()
    layers = (1, 3)
    axis = concept_axis(lm6, pairs, layers)
    seqs, conts = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]]
    got = text_projection(lm6, seqs, conts, axis)
    assert torch.allclose(axis.u.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    assert bool((axis.scale > 0).all())  # the pairs' own separation along their own mean difference is positive
    for i in range(2):
        ids, mask, pos = left_pad([seqs[i] + conts[i]], pad_id(lm6), lm6.device)
        with capture(lm6.model, layers) as store:
            forward(lm6.model, ids, mask, pos, keep=1)
        for j, layer in enumerate(layers):
            h = store[layer][0, len(seqs[i]) :].double()  # the continuation's positions
            want = float((h @ axis.u[j]).mean() / axis.scale[j])
            assert float(got[i, j]) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_the_base_text_scores_zero_and_a_control_is_paired(lm6, concept, calibrated):
    results, controls = calibrated
    judged = J.judge(lm6, results, concept, controls=controls, horizon=8, seed=0)
    rows = judged.rows["concept_score"]
    assert len(rows) == len([*results, *controls]) * 24  # 24 held-out prompts of the library, one dose
    assert all(r["score"] == pytest.approx(r["steered"] - r["base"], abs=1e-12) for r in rows)
    # the base model's own text read as "steered": score 0 by construction (what the difference removes)
    b = HeldOut(lm6, None, (0.0,), (0.0,), J.sizes(concept, False), 8, {}, concept=concept)
    same = J.concept_scores(lm6, concept, b, [dataclasses.replace(b, vector=results[0].vector, joint={"generic": b.generic})])
    assert all(r["score"] == 0.0 for r in same)
    board = ranking.board(judged.rows, judged.record)
    vec = next(e for e in board.entries if e.name == J.name(results[0].vector))
    ctrl = next(e for e in board.entries if e.name == vec.control)
    mine = {r["prompt"]: r["score"] for r in rows if r["method"] == vec.name}
    theirs = {r["prompt"]: r["score"] for r in rows if r["method"] == ctrl.name}
    assert vec.concept_vs_control.mean == pytest.approx(np.mean([mine[p] - theirs[p] for p in mine]), rel=1e-9)
    assert vec.concept.mean == pytest.approx(np.mean(list(mine.values())), rel=1e-9)
    assert vec.concept_vs_control.lo <= vec.concept_vs_control.mean <= vec.concept_vs_control.hi


def test_the_base_text_of_a_prompt_has_one_reading_whatever_layers_steered_it(lm6, concept, calibrated):
    """One ruler: vectors at layers 1-2 and 3 and their controls, judged together; every row of a prompt carries the
    same base reading, and it is the reading at the recorded reference block."""
    results, controls = calibrated
    judged = J.judge(lm6, results, concept, controls=controls, horizon=8, seed=0)
    rows = judged.rows["concept_score"]
    assert len({r["method"] for r in rows}) == 4 and len({J.name(r.vector) for r in results}) == 2
    by_prompt: dict[str, set] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], set()).add(r["base"])
    assert len(by_prompt) == 24 and all(len(v) == 1 for v in by_prompt.values())
    block = judged.settings["concept_block"]
    assert block == reference_block(lm6, concept.pairs()).block and len(judged.settings["concept_block_scores"]) == 6


def test_the_reference_block_is_where_left_out_pairs_separate_most_consistently():
    """Planted: at block 2 every pair differs by the same direction (small noise); at the others by noise alone or by a
    direction whose size varies wildly across pairs. loo_separation picks block 2; too few pairs are refused."""
    g = torch.Generator().manual_seed(0)
    n, d = 12, 16
    v = torch.zeros(d, dtype=torch.float64)
    v[0] = 1.0
    noise = lambda scale: scale * torch.randn(n, d, generator=g, dtype=torch.float64)
    sizes = torch.linspace(-1.0, 3.0, n, dtype=torch.float64)[:, None]
    diff = torch.stack([noise(1.0), sizes * v + noise(0.1), 2.0 * v + noise(0.1), noise(1.0)])  # [l n d]
    scores = loo_separation(diff)
    assert int(scores.argmax()) == 2 and scores[2] > 3 * scores[1]
    with pytest.raises(ValueError, match="at least 3 contrast pairs"):
        loo_separation(diff[:, :2])


def test_the_leaderboard_ranks_by_the_score_beyond_the_control(lm6, concept, calibrated):
    results, controls = calibrated
    board = J.judge(lm6, results, concept, controls=controls, horizon=8, seed=0, alphas=(1.0, 2.0))
    b = ranking.board(board.rows, board.settings)
    at1 = [e for e in b.at(1.0) if not e.is_control]
    keys = [e.reading(b.rank_by).mean for e in at1]
    assert keys == sorted(keys, reverse=True) and b.rank_by in J.READINGS
    assert [e.is_control for e in b.entries] == sorted(e.is_control for e in b.entries)  # controls last
    assert {e.alpha for e in b.entries} == {1.0, 2.0} and len(b.entries) == 2 * 4
    for e in b.entries:
        assert e.heldout_lo <= e.heldout_p95 <= e.heldout_hi
        assert e.in_band == (0.7 <= e.heldout_p95 <= 1.4)
        assert e.delta_logit is not None and e.excess_nll.n_values == 24


def test_no_probes_says_not_measured_and_a_failed_vector_is_kept(lm6, tmp_path, calibrated):
    src = tmp_path / "c"
    src.mkdir()
    (src / "pairs.jsonl").write_text(
        "".join(json.dumps({"positive": f"I love item {i}.", "negative": f"I hate item {i}."}) + "\n" for i in range(4))
    )
    bare = Concept.load(src)
    results, _ = calibrated
    stuck = dataclasses.replace(results[0], converged=False, status="not_converged")
    judged = J.judge(lm6, [stuck, results[1]], bare, horizon=8, seed=0)
    assert judged.rows["target"] == []  # no probes: no rows, never a silent 0
    b = ranking.board(judged.rows, judged.settings)
    assert len(b.entries) == 2 and all(e.delta_logit is None for e in b.entries)
    text = "\n".join(leaderboard.lines(b))
    assert "not measured" in text and "not_converged: judged at its last c" in text
    assert all(e.concept_vs_control is None for e in b.entries)  # no control given: no floor claimed


GRID = ["--method", "mean_diff,directional_ablation", "--layers", "1-2/3", "--window", "6", "--n-prompts", "4"]


def test_calibrate_judges_a_grid_into_a_leaderboard(six_layer_dir, tmp_path, capsys, monkeypatch):
    from isokl import cli
    from isokl.core.formats.vector import Vector

    monkeypatch.chdir(tmp_path)
    code = cli.main(["calibrate", "--model", str(six_layer_dir), *GRID, "--horizon", "8"])
    out = capsys.readouterr().out
    g = tmp_path / "grid"
    assert code == grid_exit(g)
    rows = list(csv.DictReader((g / "grid.csv").read_text().splitlines()))
    assert {(r["method"], r["layers"]) for r in rows} == {
        (m, ls) for m in ("mean_diff", "directional_ablation", "random_direction") for ls in ("1..2", "3")
    }
    again = ranking.load(g)  # from the judge's files: the same board the CLI wrote from its computed rows
    files = {r["name"]: r["file"] for r in rows}
    assert leaderboard.csv_text(again, files) == (g / "grid.csv").read_bytes().decode()
    assert [r["rank"] for r in rows] == [*(again.places[r["name"]].label for r in rows[:4]), "control", "control"]
    assert rows[0]["rank"] in ("1", "1=") and rows[0]["tied_with_best"] == "1"
    for r in rows:
        v = Vector.load(g / r["file"])  # every vector, controls too, saved and loadable
        assert float(r["c_star"]) == pytest.approx(v.coeff, rel=1e-5)
        ctrl = next((x for x in rows if x["name"] == r["control"]), None)
        if r["rank"] != "control":
            assert ctrl is not None and ctrl["layers"] == r["layers"]
            assert float(r["beyond_control"]) == pytest.approx(float(r["concept"]) - float(ctrl["concept"]), abs=2e-5)
    for name in ("grid.md", "grid.svg", "grid.png", "judge/settings.json", "judge/concept_score.csv"):
        assert (g / name).is_file() and (g / name).stat().st_size > 0
    assert (g / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert out.count("\n| ") == 2 + len(rows) - 1 and "judged in" in out
    assert not [p for p in g.iterdir() if is_temporary(p)]  # every write renamed into place


def test_an_interrupted_judge_leaves_the_vectors_and_no_table(six_layer_dir, tmp_path, capsys, monkeypatch):
    from isokl import cli
    from isokl.core.formats.vector import Vector

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(J, "judge", interrupt)
    assert cli.main(["calibrate", "--model", str(six_layer_dir), *GRID, "--horizon", "8"]) == 130
    g = tmp_path / "grid"
    files = sorted(p.name for p in g.iterdir())
    assert files == sorted(
        f"{m}_L{ls}.safetensors" for m in ("mean_diff", "directional_ablation", "random_direction") for ls in ("1-2", "3")
    )
    assert all(Vector.load(g / f).calibration is not None for f in files)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "pca,random_direction"], ("--method", "control")),
        (["--alphas", "1,-2"], ("--alphas", "positive")),
        (["--window", "40"], ("--horizon", "below 40")),
    ],
)
def test_bad_judge_flags_fail_in_one_line_before_a_model_loads(extra, words, tmp_path, capsys, no_load, monkeypatch):
    from isokl import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["calibrate", *extra]) == 1
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and all(w in err[0] for w in words), err


@pytest.mark.parametrize("at", [[0.5, 0.5, 0.5], [0.1, 0.11, 0.9], [0.97, 0.98, 0.99], [0.2, 0.6]])
def test_control_labels_keep_apart_in_order_and_inside(at):
    """grid.svg's control labels (neighbouring bands overprinted each other): at least LABEL_GAP apart, in the bands'
    order, inside the axes; labels already apart do not move."""
    from isokl.report.grid import LABEL_GAP, dodge

    got = dodge(sorted(at), LABEL_GAP)
    assert all(b - a >= LABEL_GAP - 1e-12 for a, b in itertools.pairwise(got))
    assert got[-1] <= 1 - LABEL_GAP / 2 + 1e-12
    apart = all(b - a >= LABEL_GAP for a, b in itertools.pairwise(sorted(at))) and max(at) <= 1 - LABEL_GAP / 2
    assert (got == sorted(at)) == apart


def test_a_users_scorer_is_a_column_with_its_interval_floor_and_ranking(lm6, concept, calibrated):
    """scorers={"length": text -> len / 10}: each row's score is the steered text's value minus the base text's (the
    texts the judge kept), the column's mean is theirs, beyond ctrl is paired per prompt, and rank_by ranks by it."""
    results, controls = calibrated
    length = lambda text: len(text) / 10
    judged = J.judge(lm6, results, concept, controls=controls, horizon=8, seed=0, scorers={"length": length}, rank_by="length")
    rows = judged.rows["scorer_score"]
    texts = {(r["method"], r["prompt"]): r["text"] for r in judged.rows["examples"]}
    for r in rows:
        assert r["score"] == pytest.approx(length(texts[(r["method"], r["prompt"])]) - length(texts[("base", r["prompt"])]))
    board = ranking.board(judged.rows, judged.record)
    head = leaderboard.lines(board)[0]
    assert "| length |" in head and "| beyond ctrl (length) |" in head and "Ranked by length" in leaderboard.header(board)
    vec = next(e for e in board.entries if e.name == J.name(results[0].vector))
    mine = {r["prompt"]: r["score"] for r in rows if r["method"] == vec.name}
    theirs = {r["prompt"]: r["score"] for r in rows if r["method"] == vec.control}
    assert vec.scores["length"].mean == pytest.approx(np.mean(list(mine.values())), rel=1e-9)
    assert vec.scores_vs_control["length"].mean == pytest.approx(np.mean([mine[p] - theirs[p] for p in mine]), rel=1e-9)
    keys = [e.scores_vs_control["length"].mean for e in board.entries if not e.is_control]
    assert keys == sorted(keys, reverse=True)  # ranked by the scorer beyond its control
    table = list(csv.DictReader(leaderboard.csv_text(board).splitlines()))
    assert float(table[0]["score_length"]) == pytest.approx(board.entries[0].scores["length"].mean, rel=1e-5)
    with pytest.raises(ValueError, match="rank_by 'nope'"):
        J.judge(lm6, results, concept, scorers={"length": length}, rank_by="nope")
    with pytest.raises(ValueError, match="scorer 'bad' returned nan"):
        J.judge(lm6, results, concept, horizon=8, scorers={"bad": lambda t: float("nan")})


def test_a_scorer_from_a_file_on_the_command_line(six_layer_dir, tmp_path, capsys, monkeypatch):
    from isokl import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("def exclaims(text):\n    return float(text.count('!'))\n")
    args = ["calibrate", "--model", str(six_layer_dir), *GRID, "--horizon", "8", "--scorer", "mine.py:exclaims"]
    assert cli.main([*args, "--rank-by", "exclaims"]) == grid_exit(tmp_path / "grid")
    rows = list(csv.DictReader((tmp_path / "grid" / "grid.csv").read_text().splitlines()))
    assert {"score_exclaims", "score_exclaims_lo", "score_exclaims_beyond_control"} <= set(rows[0])
    assert "Ranked by exclaims" in (tmp_path / "grid" / "grid.md").read_text()
    capsys.readouterr()


@pytest.mark.parametrize(
    "spec, words",
    [
        ("nofile.py:f", ("--scorer", "does not exist")),
        ("mine.py", ("--scorer", "PATH.py:FUNCTION")),
        ("mine.py:missing", ("--scorer", "no function 'missing'")),
        ("broken.py:f", ("--scorer", "importing broken.py failed: ZeroDivisionError")),
    ],
)
def test_a_bad_scorer_fails_in_one_line_before_a_model_loads(spec, words, tmp_path, capsys, no_load, monkeypatch):
    from isokl import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("def f(text):\n    return 1.0\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    assert cli.main(["calibrate", "--method", "mean_diff,pca", "--layers", "1-2", "--out", "g", "--scorer", spec]) == 1
    one_line_error(capsys, *words)


def _e(mean: float, half: float):
    from isokl.report.inference import Estimate

    return Estimate(mean, mean - half, mean + half, 24, 24)


def test_overlapping_intervals_share_a_place_and_disjoint_ones_do_not():
    """The leader (highest mean) and every vector whose interval overlaps its own share first place ("1="); a vector
    clear of the leader is placed after the vectors wholly above it; a lone place has no "="; not measured: n/a."""
    got = leaderboard.places(
        {"a": _e(5.0, 1.0), "b": _e(4.5, 1.0), "c": _e(1.0, 0.5), "d": _e(0.9, 0.5), "e": _e(-3.0, 0.1), "f": None}
    )
    assert {k: p.label for k, p in got.items()} == {"a": "1=", "b": "1=", "c": "3=", "d": "3=", "e": "5", "f": "n/a"}
    assert [k for k, p in got.items() if p.tied_with_best] == ["a", "b"]
    apart = leaderboard.places({"a": _e(5.0, 0.1), "b": _e(4.0, 0.1)})
    assert {k: p.label for k, p in apart.items()} == {"a": "1", "b": "2"} and not apart["b"].tied_with_best


def test_the_board_prints_its_places_ties_and_resolution(lm6, concept, calibrated):
    """grid.md's # column, grid.csv's rank and tied_with_best, the repr and the header all say the places the ranking
    reading's intervals support, and the header states the smallest difference the board calls."""
    results, controls = calibrated
    judged = J.judge(lm6, results, concept, controls=controls, horizon=8, seed=0)
    b = ranking.board(judged.rows, judged.record)
    table = list(csv.DictReader(leaderboard.csv_text(b).splitlines()))
    vectors = [r for r in table if r["rank"] != "control"]
    assert {r["rank"] for r in vectors} == {p.label for p in b.places.values()}
    assert [r["tied_with_best"] for r in vectors] == ["1" if b.places[r["name"]].tied_with_best else "0" for r in vectors]
    assert b.places[b.ranked()[0]].tied_with_best
    half = [(e.reading(b.rank_by).hi - e.reading(b.rank_by).lo) / 2 for e in b.at(1.0) if not e.is_control]
    assert b.resolution() == pytest.approx(2 * float(np.median(half)))
    assert f"more than about {b.resolution():.3g}" in leaderboard.header(b)
    assert repr(b).startswith("Board(2 vectors, 2 controls: first ") and f"by {b.rank_by})" in repr(b)


def test_the_question_is_read_per_reply_and_ranks_when_asked(lm6, concept, calibrated):
    """The concept's question: every steered reply's log-odds minus its prompt's base reply's, both as
    `question_reading` gives them; rank_by="question" ranks by it beyond the control; a concept without a question
    refuses it in one line."""
    from isokl.study.metrics import question_reading

    results, controls = calibrated
    judged = J.judge(lm6, results, concept, controls=controls, horizon=8, seed=0, rank_by="question")
    rows = judged.rows["question_score"]
    assert len(rows) == len([*results, *controls]) * 24
    ex = {(r["method"], r["prompt"]): r["text"] for r in judged.rows["examples"]}
    users = {p.id: p.user for p in concept.heldout(24)}
    some = rows[:3]
    got = question_reading(lm6, [users[r["prompt"]] for r in some], [ex[(r["method"], r["prompt"])] for r in some],
                           concept.question, concept.answers)  # fmt: skip
    base = question_reading(lm6, [users[r["prompt"]] for r in some], [ex[("base", r["prompt"])] for r in some],
                            concept.question, concept.answers)  # fmt: skip
    for r, g, w in zip(some, got, base, strict=True):
        assert r["steered"] == pytest.approx(float(g), rel=1e-9) and r["base"] == pytest.approx(float(w), rel=1e-9)
        assert r["score"] == pytest.approx(r["steered"] - r["base"], abs=1e-12)
    b = ranking.board(judged.rows, judged.record)
    keys = [e.question_vs_control.mean for e in b.at(1.0) if not e.is_control]
    assert b.rank_by == "question" and keys == sorted(keys, reverse=True)
    assert "| question |" in leaderboard.lines(b)[0]
    bare = dataclasses.replace(concept, question="", answers=None)
    with pytest.raises(ValueError, match="has no question in concept.json"):
        J.judge(lm6, results, bare, rank_by="question")
    assert J.rank_reading(bare, None, {}) == next(r for r in J.RANKING if r != "question")


@pytest.mark.parametrize(
    "meta, words",
    [
        ({"question": "Is it good?"}, "has question but no answer_positive, answer_negative"),
        ({"question": "Is it good?", "answer_positive": "yes", "answer_negative": ""}, "must be a non-empty string"),
    ],
)
def test_a_question_without_both_answers_is_refused_in_one_line(tmp_path, meta, words):
    from isokl.core.formats.concept import ConceptError

    (tmp_path / "pairs.jsonl").write_text(
        "".join(json.dumps({"positive": f"I love item {i}.", "negative": f"I hate item {i}."}) + "\n" for i in range(4))
    )
    (tmp_path / "concept.json").write_text(json.dumps(meta))
    with pytest.raises(ConceptError, match=words):
        Concept.load(tmp_path)
