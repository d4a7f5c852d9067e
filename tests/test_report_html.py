"""report.html: one self-contained page per study and per judged grid, read in the system's headless chromium
(`isokl.report.browser`) with the network off. The browser tests skip, with the reason, only where chromium or
playwright is missing (scripts/setup.sh installs both where it can)."""

import csv
import gzip
import io
import json
import re
from pathlib import Path

import pytest

from conftest import byte_tokenizer, grid_exit, tiny_model
from isokl.core.model.models import from_module
from isokl.report import browser
from isokl.report.build import build
from isokl.report.page import NOT_RECORDED
from isokl.study import records
from isokl.study.sweep import SweepConfig, run_sweep

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "results" / "v2"
STUDY = dict(
    models="tiny-a",
    methods="mean_diff,pca",
    control="random_direction",
    control_windows="6",
    seeds="0,1",
    windows="6",
    n_heldout="5,3,4",
    alphas="1,2",
    dose_alphas="0.5,3",
    dose_windows="6",
    horizon=8,
)
GRID = ["--method", "mean_diff,directional_ablation", "--layers", "1-2/3", "--window", "6", "--n-prompts", "4", "--horizon", "8"]


def _loader(model_id, device="cpu"):
    return from_module(tiny_model("llama", seed=7), byte_tokenizer(), id=model_id)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_sweep(SweepConfig(**STUDY, out=str(out)), loader=_loader)
    build(out)
    return out


@pytest.fixture(scope="module")
def grid(six_layer_dir, tmp_path_factory):
    from isokl import cli

    out = tmp_path_factory.mktemp("grid") / "g"
    assert cli.main(["calibrate", "--model", str(six_layer_dir), *GRID, "--out", str(out)]) == grid_exit(out)
    return out


@pytest.fixture(scope="module")
def chrome():
    why = browser.unavailable()
    if why:
        pytest.skip(f"browser tests skipped: {why}")
    with browser.session() as b:
        yield b


def opened(b, path: Path, anchor: str = ""):
    o = browser.open_page(b, path / "report.html", anchor)
    assert o.refused == [] and o.errors == []  # nothing fetched, nothing broken
    return o


def claims_verdicts(d: Path) -> list[tuple[str, str]]:
    return re.findall(r"^- \*\*(R\d): (.+?)\.\*\*", (d / "claims.md").read_text(), re.M)


def trajectory(d: Path) -> dict[tuple, float]:
    """(method, seed, alpha, prompt, t) -> KL, from the folder's trajectory file."""
    p = records.path(d, "trajectory")
    text = gzip.decompress(p.read_bytes()).decode() if p.name.endswith(".gz") else p.read_text()
    return {
        (r["method"], r["seed"], float(r["alpha"]), r["prompt"], int(r["t"])): float(r["kl"])
        for r in csv.DictReader(io.StringIO(text))
        if r["valid"] == "1"
    }


# ---- the file itself (no browser) ---------------------------------------------------------------------------------


def test_the_page_is_one_file_that_references_nothing_outside_itself(study, grid):
    for d in (study, grid):
        text = (d / "report.html").read_text()
        assert not re.search(r"\ssrc=", text)  # no script, image or frame loaded from anywhere
        assert set(re.findall(r'href="(.)', text)) <= {"#"}  # links and SVG references are anchors
        assert not re.search(r"url\((?!#)", text) and "@import" not in text and "@font-face" not in text
        assert "default-src 'none'" in text  # and the page's own policy forbids any fetch


def test_a_rebuild_gives_the_same_bytes_and_the_csv_files_stay_the_record(study):
    first = (study / "report.html").read_bytes()
    build(study)
    assert (study / "report.html").read_bytes() == first
    data = json.loads(re.search(rb'id="page-data">(.*?)</script>', first, re.S).group(1).replace(b"<\\/", b"</"))
    ex = records.load(study)["examples"]
    assert len(data["steered"]) + len(data["base"]) == len(ex)  # every example row, nothing added
    kl = trajectory(study)
    for r in data["steered"]:  # each token's KL is that rollout's own trajectory row t = i + 1
        for i, v in enumerate(r["kl"]):
            assert v == kl[(r["sel"]["method"], str(r["sel"]["seed"]), r["alpha"], r["prompt"], i + 1)]


def test_v2_has_its_page_within_5_mb_and_says_per_token_kl_was_not_recorded():
    p = V2 / "report.html"
    assert p.stat().st_size <= 5 * 2**20
    text = p.read_text()
    assert NOT_RECORDED in text and '"recorded":false' in text


# ---- in the browser -----------------------------------------------------------------------------------------------


def test_the_verdict_strip_shows_the_verdicts_of_claims_md(chrome, study):
    o = opened(chrome, study)
    strip = o.page.locator("#verdict-strip a.verdict")
    shown = [(strip.nth(i).locator("b").inner_text(), strip.nth(i).locator(".v").inner_text()) for i in range(strip.count())]
    assert shown == claims_verdicts(study) and len(shown) == 6


def test_an_anchor_opens_that_requirements_evidence(chrome, study):
    o = opened(chrome, study, "R3")
    assert o.page.locator("details#R3").get_attribute("open") is not None
    assert o.page.locator("details#R1").get_attribute("open") is None
    o.page.locator('#verdict-strip a[href="#R1"]').click()
    assert o.page.locator("details#R1").get_attribute("open") is not None
    assert o.page.locator("details#R1 table tbody tr").count() == 4  # one row per method cell


def test_table1_sorts_by_a_column(chrome, study):
    o = opened(chrome, study)
    t = o.page.locator("#table1-table")
    heads = t.locator("thead th").all_inner_texts()
    col = heads.index("holdout_p95")
    t.locator("thead th").nth(col).locator("button").click()
    values = [float(v) for v in t.locator(f"tbody tr td:nth-child({col + 1})").evaluate_all("els => els.map(e => e.dataset.v)")]
    assert values == sorted(values) and len(values) == 3  # two methods and the control
    t.locator("thead th").nth(col).locator("button").click()
    again = t.locator(f"tbody tr td:nth-child({col + 1})").evaluate_all("els => els.map(e => e.dataset.v)")
    assert [float(v) for v in again] == sorted(values, reverse=True)


def test_choosing_a_dose_changes_the_continuation_and_a_token_shows_its_kl(chrome, study):
    o = opened(chrome, study, "text")
    page = o.page
    first = page.locator("#tokens .prompt").first.locator(".cont").nth(1)
    assert first.locator("h4").inner_text().startswith("alpha 1 ")
    at_1 = first.locator(".text").inner_text()
    page.select_option("#sel-dose", "3")
    first = page.locator("#tokens .prompt").first.locator(".cont").nth(1)
    assert first.locator("h4").inner_text().startswith("alpha 3 ")
    assert first.locator(".text").inner_text() != at_1
    tok = first.locator(".tok").nth(2)
    tok.hover()
    kl = trajectory(study)[("mean_diff", "0", 3.0, "gen00", 3)]
    assert page.locator("#tip").is_visible()
    assert (
        page.locator("#tip").inner_text() == f"token 3: KL {kl:.3f} nat"
        or "no text of its own" in page.locator("#tip").inner_text()
    )
    page.mouse.move(0, 0)
    tok.focus()  # the keyboard reaches the same value
    assert page.locator("#tip").is_visible() and f"{kl:.3f}" in page.locator("#tip").inner_text()
    page.select_option("#sel-dose", "all")
    assert page.locator("#tokens .prompt").first.locator(".cont").count() == 1 + 4  # base, 0.5, 1, 2, 3


def test_the_selected_cell_shows_its_calibration_history(chrome, study):
    o = opened(chrome, study, "text")
    page = o.page
    page.select_option("#sel-method", json.dumps("pca"))
    page.select_option("#sel-seed", json.dumps(1))
    line = page.locator("#cell-line").inner_text()
    assert line.startswith("tiny-a pca seed 1 T = 6:")
    cal = next(r for r in records.load(study)["calibration"] if (r["method"], r["seed"]) == ("pca", "1"))
    steps = page.locator("#history tbody tr").count()
    assert steps == int(cal["evaluations"]) and page.locator("#history svg circle").count() == steps


def test_the_screenshot_is_not_blank(chrome, study, tmp_path):
    import matplotlib.image as mpimg

    png = browser.screenshot(study / "report.html", tmp_path / "shot.png", anchor="text", hover="#tokens .cont .tok", b=chrome)
    img = mpimg.imread(png)
    colours = {tuple(px) for px in img.reshape(-1, img.shape[-1])[::97].round(2).tolist()}
    assert img.shape[0] >= 800 and len(colours) > 20


def test_v2_opens_offline_and_shows_the_text_uncoloured(chrome):
    o = opened(chrome, V2)
    page = o.page
    assert page.locator("#not-recorded").is_visible() and page.locator("#tokens .tok").count() == 0
    assert page.locator("#tokens .cont .text").first.inner_text().strip() != ""
    shown = page.locator("#verdict-strip a.verdict .v").all_inner_texts()
    assert shown == [v for _, v in claims_verdicts(V2)]


def test_a_grid_page_shows_the_leaderboard_and_every_vectors_text(chrome, grid):
    o = opened(chrome, grid, "leaderboard")
    page = o.page
    rows = list(csv.DictReader((grid / "grid.csv").read_text().splitlines()))
    names = page.locator("#leaderboard-table tbody tr td:nth-child(2)").all_inner_texts()
    assert names == [r["name"] for r in rows]
    assert page.locator("figure#grid svg").count() == 1
    vectors = page.locator("#sel-method option").all_inner_texts()
    assert set(vectors) == {r["name"] for r in rows}  # every vector and control has its text
    page.select_option("#sel-method", json.dumps(rows[0]["name"]))
    n = json.loads((grid / "judge" / "settings.json").read_text())["n_heldout"]["heldout_generic"]
    assert page.locator("#tokens .prompt").count() == n  # every judged continuation is kept, not the first 3
    base = page.locator("#tokens .cont").first
    assert base.locator("h4").inner_text().startswith("base model") and "(not recorded)" not in base.inner_text()
    page.locator("#tokens .cont").nth(1).locator(".tok").first.hover()
    assert page.locator("#tip").inner_text().startswith("token 1")
    assert page.locator("#history tbody tr").count() >= 1  # the judge records every solver step


def test_report_rebuilds_a_grid_folder_from_its_files_to_the_same_bytes(grid, capsys):
    from isokl import cli

    names = ("grid.md", "grid.csv", "report.html")
    before = {n: (grid / n).read_bytes() for n in names}
    assert cli.main(["report", str(grid)]) == 0
    assert {n: (grid / n).read_bytes() for n in names} == before
    assert str(grid / "report.html") in capsys.readouterr().out
