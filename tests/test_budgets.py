"""The budget as a choice: every vector of a grid calibrated to several p95 targets in two joint solves that share
their evaluations, judged at each, with one table per budget and the frontier drawn; bad budgets refused in one line."""

import csv

import pytest

from conftest import byte_tokenizer, grid_exit, one_line_error, tiny_model
from isokl.core.calibrate import calibrate_budgets, calibrate_many, check_budgets, first_budget
from isokl.core.extract import extract
from isokl.core.formats.concept import Concept
from isokl.core.model.models import from_module
from isokl.core.stats.solver import solve
from isokl.core.stats.statistic import TOL

BUDGETS = (0.5, 1.0, 2.0)


@pytest.fixture(scope="module")
def lm6():
    return from_module(tiny_model("llama", seed=3, layers=6), byte_tokenizer(), id="tiny-b")


@pytest.fixture(scope="module")
def vectors(lm6):
    pairs = Concept.load("sentiment").pairs(0)
    return [extract(lm6, pairs, "mean_diff", layers=(1, 2)), extract(lm6, pairs, "pca", layers=(3,))]


@pytest.fixture(scope="module")
def prompts():
    return Concept.load("sentiment").calibration(0, 4)


@pytest.fixture(scope="module")
def budgets(lm6, vectors, prompts):
    return calibrate_budgets(lm6, vectors, prompts, BUDGETS, T=6, progress=False)


def test_every_vector_meets_every_budget_and_its_dose_grows_with_it(budgets):
    """Each (vector, budget): converged, p95 within the tolerance of that budget, the budget recorded in its
    calibration; c* increasing with the budget for each vector."""
    assert list(budgets) == list(BUDGETS)
    for b, joint in budgets.items():
        for r in joint.results:
            assert r.converged, (b, r.status, r.note)
            assert abs(r.p95 - b) <= TOL and r.vector.calibration.target == b
    for i in range(2):
        cs = [budgets[b].results[i].c_star for b in BUDGETS]
        assert cs == sorted(cs) and len(set(cs)) == 3


def test_the_later_budgets_read_the_first_ones_evaluations(budgets, lm6, vectors, prompts):
    """The first solve is the one at 1 nat alone (the same c* and evaluations as calibrate_many at target 1); each
    later budget's history leads with those evaluations, which its own count leaves out; the later budgets share
    one solve, and their rounds are fewer than a fresh calibration of each would take."""
    alone = calibrate_many(lm6, vectors, prompts, T=6, progress=False)
    first = budgets[1.0]
    assert [r.c_star for r in first.results] == [r.c_star for r in alone.results]
    assert [r.evaluations for r in first.results] == [r.evaluations for r in alone.results]
    for b in (0.5, 2.0):
        for r, lead in zip(budgets[b].results, first.results, strict=True):
            n = len(lead.history)
            assert [s.c for s in r.history[:n]] == [s.c for s in lead.history]
            assert r.evaluations == len(r.history) - sum(s.complete for s in lead.history)
    assert budgets[0.5].rounds is budgets[2.0].rounds
    fresh = [calibrate_many(lm6, vectors, prompts, T=6, target=b, progress=False) for b in (0.5, 2.0)]
    assert sum(r.evaluations for b in (0.5, 2.0) for r in budgets[b].results) < sum(
        r.evaluations for j in fresh for r in j.results
    )


def test_a_known_point_in_the_band_is_a_solve_with_no_evaluation():
    """The solver reads known points first: one inside the band converges with no new evaluation; bracketing ones
    leave only the interpolation to do."""
    f = lambda c: 0.1 * c * c
    calls = []
    counted = lambda c: calls.append(c) or f(c)
    got = solve(counted, c0=1.0, target=1.0, known=[(3.1, f(3.1)), (1.0, f(1.0))])
    assert got.converged and got.c == 3.1 and calls == []
    got = solve(counted, c0=1.0, target=2.0, known=[(3.0, f(3.0)), (6.0, f(6.0))])
    assert got.converged and len(calls) == 1 and abs(got.value - 2.0) <= TOL


@pytest.mark.parametrize(
    "given, words",
    [((0.5, -1.0), "budget -1.0"), ((1.0, 1.0), "given twice"), ((), "at least one"), ((float("nan"),), "budget nan")],
)
def test_a_bad_budget_is_one_line(given, words):
    with pytest.raises(ValueError, match=words):
        check_budgets(given)


def test_the_first_budget_is_the_one_nearest_one_nat():
    assert first_budget((0.5, 1.0, 2.0)) == 1.0 and first_budget((0.5, 2.0)) == 0.5 and first_budget((4.0,)) == 4.0


def test_from_python_a_grid_holds_each_budget_and_the_judge_judges_each(lm6, vectors, prompts, tmp_path):
    import isokl

    grid = isokl.calibrate(lm6, vectors, prompts, T=6, controls=True, budgets=BUDGETS, progress=False)
    assert grid.budget == 1.0 and list(grid.by_budget) == list(BUDGETS) and "also at 0.5, 2 nats" in repr(grid)
    assert all(len(g.controls) == 2 for g in grid.by_budget.values())
    board = isokl.judge(lm6, grid, "sentiment", T=8, seed=0, out=tmp_path, progress=False)
    assert list(board.by_budget) == list(BUDGETS) and board.budget == 1.0
    for b, one in board.by_budget.items():
        assert one.settings["budget"] == b
    assert (tmp_path / "judge").is_dir() and (tmp_path / "budget-0.5" / "judge").is_dir()
    from isokl.report import leaderboard, ranking

    again = ranking.load(tmp_path)
    assert list(again.by_budget) == list(BUDGETS)
    table = list(csv.DictReader(leaderboard.csv_text(again).splitlines()))
    assert {r["budget"] for r in table} == {"0.5", "1", "2"}
    text = leaderboard.markdown(again, "# t")
    assert all(f"## Budget {b:g} nats" in text for b in BUDGETS)
    with pytest.raises(ValueError, match="budgets or target, not both"):
        isokl.calibrate(lm6, vectors, prompts, T=6, target=2.0, budgets=BUDGETS)
    with pytest.raises(ValueError, match="given twice"):
        isokl.calibrate(lm6, vectors, prompts, T=6, budgets=(1, 1))


GRID = ["--method", "mean_diff,pca", "--layers", "1-2/3", "--window", "6", "--n-prompts", "4", "--horizon", "8"]


def test_the_cli_calibrates_judges_and_draws_every_budget(six_layer_dir, tmp_path, capsys, monkeypatch):
    """--budgets 0.5,1,2: the vectors at 1 nat in OUT, the others in OUT/budget-B/ under the same names, a table per
    budget in grid.md, every budget's rows in grid.csv, the frontier in grid.svg; a rebuild gives the same files."""
    from isokl import cli
    from isokl.core.formats.vector import Vector

    monkeypatch.chdir(tmp_path)
    g = tmp_path / "grid"
    code = cli.main(["calibrate", "--model", str(six_layer_dir), *GRID, "--budgets", "0.5,1,2", "--out", str(g)])
    assert code == grid_exit(g)
    rows = list(csv.DictReader((g / "grid.csv").read_text().splitlines()))
    assert {r["budget"] for r in rows} == {"0.5", "1", "2"} and len(rows) == 3 * 6
    for r in rows:
        v = Vector.load(g / r["file"])
        assert v.calibration.target == float(r["budget"])
        assert r["file"].startswith("budget-") == (r["budget"] != "1")
    md = (g / "grid.md").read_text()
    assert md.count("## Budget ") == 3 and (g / "grid.svg").stat().st_size > 0
    from isokl.report import grid, ranking

    fig = grid.draw(ranking.load(g), "t")
    ax = fig.axes[0]
    joined = {ln.get_gid() for ln in ax.lines if (ln.get_gid() or "").startswith("frontier ")}
    assert joined == {f"frontier {r['name']}" for r in rows if r["rank"] != "control" and r["budget"] == "1"}
    assert all(len(ln.get_xdata()) == 3 for ln in ax.lines if (ln.get_gid() or "").startswith("frontier "))
    assert "lines: budgets 0.5, 1, 2 nats" in ax.get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)
    out = capsys.readouterr().out
    assert "at 0.5 nats:" in out and "at 2 nats:" in out
    before = {p.name: p.read_bytes() for p in g.glob("grid.*")}
    assert cli.main(["report", str(g)]) == 0
    assert {p.name: p.read_bytes() for p in g.glob("grid.*")} == before


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--budgets", "0.5,0"], ("--budgets", "positive")),
        (["--budgets", "1,2,1"], ("--budgets", "given twice")),
        (["--budgets", "1,x"], ("--budgets",)),
        (["--budgets", "0.5,2", "--target", "2"], ("--budgets", "not both")),
        (["--budgets", "0.5,2", "--method", "pca", "--layers", "1-2"], ("--budgets", "grid folder")),
    ],
)
def test_bad_budgets_fail_the_cli_in_one_line_before_a_model_loads(extra, words, tmp_path, capsys, no_load, monkeypatch):
    from isokl import cli

    monkeypatch.chdir(tmp_path)
    base = ["--method", "mean_diff,pca"] if "--method" not in extra else []
    assert cli.main(["calibrate", *base, *extra]) == 1
    one_line_error(capsys, *words)
    assert not any(tmp_path.iterdir())
