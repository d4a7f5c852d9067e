"""Concepts: the folder format (every bad input one line, before a model loads, nothing written), the built-in
sentiment concept through the same loader (v2's hashes and settings), and a user's concept through calibrate,
check, sweep and report on a tiny random model."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import byte_tokenizer, exit_of, run_refused, saved_model, tiny_model, write_concept
from isokl import cli
from isokl.core.formats.concept import Concept, ConceptError, check_words, read_prompts
from isokl.core.model.models import from_module
from isokl.core.model.prompts import library_pool
from isokl.study import records
from isokl.study.config import StudyConfig, SweepConfig
from isokl.study.flags import ConfigError, layers
from isokl.study.sweep import settings

V2 = Path(__file__).parents[1] / "results" / "v2"


# ---- the format: every bad input is one line naming the file, line and field ------------------------------------


@pytest.mark.parametrize(
    "line, words",
    [
        ('{"id": "a", "system_positive": "x", ', ["pairs.jsonl line 3", "not valid JSON"]),
        ('{"id": "a", "system_positive": "x", "user": "u"}', ["pairs.jsonl line 3", "system_negative"]),
        ('{"id": "a", "system_positive": "", "system_negative": "y", "user": "u"}', ["line 3", "'system_positive'", "non-empty"]),
        ('{"id": "p0", "system_positive": "x", "system_negative": "y", "user": "u"}', ["line 3", "duplicate id 'p0'", "line 1"]),
        ('{"system_positive": "x", "system_negative": "y", "user": "u", "sytem": "z"}', ["line 3", "unknown field", "sytem"]),
        ('{"positive": "a text", "system_positive": "x", "system_negative": "y", "user": "u"}', ["line 3", "mixes"]),
        ("[1, 2]", ["line 3", "JSON object"]),
    ],
)
def test_a_bad_pairs_line_is_one_error_naming_file_line_and_field(tmp_path, line, words):
    d = write_concept(tmp_path / "c")
    lines = (d / "pairs.jsonl").read_text().splitlines()
    (d / "pairs.jsonl").write_text("\n".join([*lines[:2], line, *lines[2:]]) + "\n")
    with pytest.raises(ConceptError) as e:
        Concept.load(d)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_optional_files_are_checked_too(tmp_path):
    d = write_concept(tmp_path / "c")
    (d / "words.json").write_text('{"positive": ["ok"], "negative": []}')
    with pytest.raises(ConceptError, match="words.json: field 'negative' must be a non-empty list"):
        Concept.load(d)
    (d / "words.json").unlink()
    with pytest.raises(ConceptError, match="has probes.jsonl but no words.json"):
        Concept.load(d)
    d2 = write_concept(tmp_path / "c2")
    (d2 / "probes.jsonl").write_text('{"id": "q", "user": "fine"}\n{"id": "q", "user": "again"}\n')
    with pytest.raises(ConceptError, match=r"probes.jsonl line 2: duplicate id 'q'"):
        Concept.load(d2)
    d3 = write_concept(tmp_path / "c3", own_prompts=True)
    (d3 / "heldout.jsonl").write_text("Say something about a.\n")  # also a calibration prompt
    with pytest.raises(ConceptError, match="both calibration and held-out"):
        Concept.load(d3)


def test_too_few_pairs_for_a_draw_or_for_the_seeds_asked(tmp_path):
    with pytest.raises(ConceptError, match="3 pairs; a seed draws 4"):
        Concept.load(write_concept(tmp_path / "three", n_pairs=3))
    eight = write_concept(tmp_path / "eight", n_pairs=8)
    assert Concept.load(eight).max_seeds() == 2
    cfg = SweepConfig(models="x", concept=str(eight), seeds="0,1,2", out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"--seeds: 3 seeds asked, but .*pairs.jsonl has 8 pairs: enough for 2"):
        cfg.check(models=False)
    SweepConfig(models="x", concept=str(eight), seeds="0,1", out=str(tmp_path / "out")).check(models=False)


def test_a_bad_concept_fails_the_cli_in_one_line_before_a_model_loads(tmp_path, capsys, no_load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = write_concept(tmp_path / "c")
    (d / "pairs.jsonl").write_text('{"id": "a"\n')
    for verb in ("sweep", "study", "calibrate"):
        run_refused(
            [verb, "--concept", str(d), *(["--out", "o"] if verb != "calibrate" else [])],
            tmp_path,
            capsys,
            1,
            "--concept",
            "line 1",
        )
    run_refused(["calibrate", "--pairs", str(d / "pairs.jsonl")], tmp_path, capsys, 1, "--pairs", "line 1")
    run_refused(
        ["sweep", "--concept", str(tmp_path / "nowhere"), "--out", "o"], tmp_path, capsys, 1, "--concept", "no such folder"
    )
    (tmp_path / "p.txt").write_text("\n\n")
    run_refused(["calibrate", "--prompts", "p.txt"], tmp_path, capsys, 1, "--prompts", "no prompts")
    run_refused(["check", "v.safetensors", "--prompts", "p.txt"], tmp_path, capsys, 1, "does not exist")


def test_a_word_with_no_token_in_the_vocabulary_is_named():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "good": 1, "bad": 2, "Good": 3, "Bad": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    check_words(fast, {"positive": ["good"], "negative": ["bad"]}, "words.json", "m")
    with pytest.raises(ConceptError, match="words.json: negative word 'zzyzx' has no token in m's vocabulary"):
        check_words(fast, {"positive": ["good"], "negative": ["bad", "zzyzx"]}, "words.json", "m")
    with pytest.raises(ConceptError, match="every positive word starts with a token the other side shares"):
        check_words(fast, {"positive": ["bad"], "negative": ["bad", "good"]}, "words.json", "m")


def test_a_prompt_longer_than_the_context_with_the_window_is_named(tmp_path):
    lm = from_module(tiny_model("llama"), byte_tokenizer(), id="tiny")  # 256 positions
    d = write_concept(tmp_path / "c", own_prompts=True)
    Concept.load(d).check_for(lm, horizon=20)
    (d / "heldout.jsonl").write_text("short one\n" + "x" * 240 + "\n")
    with pytest.raises(ConceptError, match=r"heldout.jsonl line 2 id 'p002': \d+ tokens plus 20 generated exceed tiny's context"):
        Concept.load(d).check_for(lm, horizon=20)


def test_a_pair_too_long_for_the_context_is_named_by_line(tmp_path):
    lm = from_module(tiny_model("llama"), byte_tokenizer(), id="tiny")
    d = write_concept(tmp_path / "c")
    lines = (d / "pairs.jsonl").read_text().splitlines()
    long = json.dumps({"id": "big", "system_positive": "x" * 300, "system_negative": "y", "user": "u"})
    (d / "pairs.jsonl").write_text("\n".join([*lines[:4], long, *lines[4:]]) + "\n")
    with pytest.raises(ConceptError, match=r"pairs.jsonl line 5 id 'big\+': \d+ tokens plus 0 generated exceed"):
        Concept.load(d).check_for(lm, horizon=20)


def test_a_prompts_file_is_jsonl_or_plain_text(tmp_path):
    (tmp_path / "a.txt").write_text("First prompt.\n\n  Second prompt.  \n")
    ps, _ = read_prompts(tmp_path / "a.txt")
    assert [(p.user, p.id) for p in ps] == [("First prompt.", "p001"), ("Second prompt.", "p003")]
    (tmp_path / "b.jsonl").write_text('{"user": "Hi", "system": "Be brief.", "assistant_prefix": "Well,", "id": "x"}\n')
    (p,), _ = read_prompts(tmp_path / "b.jsonl")
    assert (p.user, p.system, p.assistant_prefix, p.id) == ("Hi", "Be brief.", "Well,", "x")


def test_full_text_pairs_are_read_at_their_last_token_as_written(tmp_path, llama_lm):
    from isokl.core.extract import extract

    d = tmp_path / "t"
    d.mkdir()
    (d / "pairs.jsonl").write_text(
        "".join(json.dumps({"positive": f"I love it {i}.", "negative": f"I hate it {i}."}) + "\n" for i in range(4))
    )
    c = Concept.load(d)
    pair = c.pairs(0)[0]
    assert llama_lm.format(pair.positive) == pair.positive.text  # no chat template around a full text
    vec = extract(llama_lm, c.pairs(0), "mean_diff")
    assert vec.directions.shape[0] == len(vec.layers)


# ---- layers ---------------------------------------------------------------------------------------------------


def test_layer_specs_parse_and_name_the_depth_when_out_of_range():
    assert layers("--layers", "10-12", 30) == (10, 11, 12)
    assert layers("--layers", "3,5-6,3", 30) == (3, 5, 6)
    assert layers("--layers", "0.25-0.75", 30) == tuple(range(8, 22))  # the default band (round(7.5) = 8)
    from isokl.core.model.hooks import default_layers

    for n in (4, 18, 24, 30):
        assert layers("--layers", "0.25-0.75", n) == default_layers(n)
    assert layers("--layers", "1.0", 30) == (29,)
    for bad, words in [
        ("", "empty"),
        ("a-b", "not a layer"),
        ("12-10", "backwards"),
        ("0.5-1.5", "0 <= lo <= hi <= 1"),
        ("1-2-3", "not a layer"),
    ]:
        with pytest.raises(ConfigError, match=words):
            layers("--layers", bad, 30)
    with pytest.raises(ConfigError, match=r"--layers: layer 30 is out of range: m has 30 blocks \(layers 0..29\)"):
        layers("--layers", "28-30", 30, "m")


# ---- the built-in concept through the loader ----------------------------------------------------------------------


def test_the_builtin_concept_hashes_as_the_v2_study_recorded_it():
    """The built-in sentiment concept moved into the concept format; a v2 cell's recorded settings equal this run's,
    so `isokl study --out results/v2` resumes (and the prompts are the same prompts)."""
    cell = V2 / "cells" / "smollm2-135m__pca__s0__T20"
    recorded = records.cell_settings(cell)
    now = settings(StudyConfig(out="x").resolve(models=False), 20)
    assert records.settings_diff(recorded, now) == []
    assert now["prompt_pools"] == recorded["prompt_pools"] and now["sentiment_words"] == recorded["sentiment_words"]
    other = settings(StudyConfig(out="x", n_calibration=16).resolve(models=False), 20)
    assert any("n_calibration" in d for d in records.settings_diff(recorded, other))


def test_an_edited_concept_is_refused_on_resume(tmp_path):
    d = write_concept(tmp_path / "c")
    cfg = dict(models="x", concept=str(d), seeds="0", windows="6", out=str(tmp_path / "o"))
    before = settings(SweepConfig(**cfg).resolve(models=False), 6)
    lines = (d / "pairs.jsonl").read_text().splitlines()
    (d / "pairs.jsonl").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # reordered: other draws
    assert any("prompt_pools" in x for x in records.settings_diff(before, settings(SweepConfig(**cfg).resolve(models=False), 6)))
    (d / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    (d / "words.json").write_text(json.dumps({"positive": ["dear"], "negative": ["hey"]}))
    assert any(
        "sentiment_words" in x for x in records.settings_diff(before, settings(SweepConfig(**cfg).resolve(models=False), 6))
    )


def test_a_concept_without_optional_files_uses_the_library_pools(tmp_path):
    c = Concept.load(write_concept(tmp_path / "c", probes=False))
    assert c.probes() is None and c.words() is None
    assert c.heldout() == library_pool("heldout_generic")
    assert c.calibration(0, 16) == Concept.load("sentiment").calibration(0, 16)
    assert SweepConfig(concept=str(tmp_path / "c")).resolve(models=False).n_heldout["heldout_sentiment"] == 0


# ---- a user's concept end to end on a tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory, "tiny-concept", seed=3)


def test_calibrate_check_sweep_and_report_on_a_users_concept(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = write_concept(tmp_path / "formality", own_prompts=True)
    vec = tmp_path / "v.safetensors"
    code = cli.main(
        ["calibrate", "--model", str(model_dir), "--concept", str(d), "--layers", "1-2", "--window", "6", "--out", str(vec)]
    )
    assert code == exit_of([vec]), capsys.readouterr().err
    from isokl.core.formats.vector import Vector

    v = Vector.load(vec)
    assert v.layers == (1, 2) and v.calibration is not None and v.calibration.n_prompts == 6  # the default 16 > its 6: all
    (tmp_path / "mine.txt").write_text("A question about rain.\nA question about snow.\nA question about wind.\n")
    capsys.readouterr()
    code = cli.main(["check", str(vec), "--prompts", "mine.txt", "--window", "6"])
    out = capsys.readouterr().out
    assert code in (0, 2) and ("IN BAND" in out) == (code == 0)
    p95 = float(out.split("p95 = ")[1].split()[0])
    assert "on 3 prompts of mine.txt, T = 6" in out and p95 > 0
    # the same prompts through the library's rollout give the same p95 (check reports, it does not recompute otherwise)
    from isokl.core.model.models import load
    from isokl.core.runtimes.rollout import rollout

    lm = load(str(model_dir))
    ps, _ = read_prompts(tmp_path / "mine.txt")
    ro = rollout(lm, lm.encode([lm.format(p) for p in ps]), 6, v, (v.coeff,))
    assert abs(ro.stats(0).p95 - p95) <= 5e-5 * max(1.0, p95)  # printed with 4 decimals

    out_dir = tmp_path / "study"
    args = ["study", "--models", str(model_dir), "--concept", str(d), "--methods", "mean_diff,directional_ablation"]
    args += ["--seeds", "0,1", "--windows", "6", "--horizon", "10", "--n-heldout", "3,2,4", "--dose-alphas", ""]
    args += ["--n-calibration", "3", "--out", str(out_dir)]
    assert cli.main(args) == 0, capsys.readouterr().err
    cal = records.read(records.path(out_dir, "calibration"), "calibration")
    assert {r["concept"] for r in cal} == {"formality"} and len(cal) == 6  # 2 methods + control, 2 seeds
    tgt = records.read(records.path(out_dir, "target"), "target")
    assert {r["probe"] for r in tgt} == {"q0", "q1", "q2", "q3"}
    assert {r["prompt"] for r in records.read(records.path(out_dir, "nll"), "nll")} == {"p001", "p002", "p003"}
    st = records.cell_settings(out_dir / "cells" / records.cell_name(str(model_dir), "mean_diff", 0, 6))
    assert st["concept"] == "formality" and st["n_calibration"] == 3
    assert sorted(p.name for p in (out_dir / "concept").iterdir()) == sorted(p.name for p in d.iterdir())
    claims_md = (out_dir / "claims.md").read_text()
    assert claims_md.startswith("# Claims report: concept formality")
    assert "3 calibration prompts and 4 contrast pairs per seed" in claims_md and "4 probes" in claims_md
    assert "Table 1: concept formality" in (out_dir / "table1.md").read_text()
    assert "Tell me a story about cats." in (out_dir / "examples.md").read_text()  # the concept's own held-out text
    nll = records.read(records.path(out_dir, "nll"), "nll")  # the degeneration measure is recorded by new sweeps
    assert all(0 < float(r["distinct3"]) <= 1 for r in nll) and "| not recorded |" not in (out_dir / "table1.md").read_text()


def test_a_concept_without_probes_reports_r2_as_not_measurable(model_dir, tmp_path, capsys):
    d = write_concept(tmp_path / "plain", probes=False)
    out_dir = tmp_path / "s"
    args = ["sweep", "--models", str(model_dir), "--concept", str(d), "--methods", "mean_diff,pca", "--seeds", "0,1"]
    args += ["--windows", "6", "--horizon", "10", "--n-heldout", "2", "--n-calibration", "2", "--out", str(out_dir)]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert records.read(records.path(out_dir, "target"), "target") == []
    assert cli.main(["report", str(out_dir)]) == 0
    claims_md = (out_dir / "claims.md").read_text()
    assert "**R2: NOT MEASURABLE.** the concept formality has no probes" in claims_md
    assert "not measured (no probes)" in (out_dir / "table1.md").read_text()
    assert "no probes (target axis not measured)" in claims_md
    shutil.rmtree(out_dir / "concept")  # the report still builds without the concept's copy (library prompt texts)
    assert cli.main(["report", str(out_dir)]) == 0


def test_debug_shows_the_traceback_that_the_one_line_error_hides(tmp_path, capsys, no_load):
    d = write_concept(tmp_path / "c")
    (d / "pairs.jsonl").write_text('{"id": "a"\n')
    assert cli.main(["sweep", "--concept", str(d), "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(ConfigError, match="--concept: .*pairs.jsonl line 1"):
        cli.main(["--debug", "sweep", "--concept", str(d), "--out", str(tmp_path / "o")])
