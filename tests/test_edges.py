"""Bad input ends in one line that names the flag or file, early, with nothing written; resumes never mix settings.

The CLI runs in-process with a sentinel on `isokl.core.model.models.load` (an early check must fail before any
model loads), or as a subprocess where a real signal or a clean interpreter matters. Models that must
load are tiny random ones saved as real local folders.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import byte_tokenizer, exit_of, files_of, one_line_error, run_refused, saved_model
from isokl import cli
from isokl.core.calibrate import calibrate_iso_kl
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.formats.vector import Vector
from isokl.core.model import models, prompts
from isokl.core.model.files import is_temporary
from isokl.study import records


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return saved_model(tmp_path_factory, "tiny-llama", seed=3)


@pytest.fixture(scope="module")
def shallow_dir(tmp_path_factory):
    """2 layers instead of 4 (the vector steers layers 1 and 2)."""
    return saved_model(tmp_path_factory, "tiny-2layers", seed=4, layers=2)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """The same shape (4 layers of width 32), other weights."""
    return saved_model(tmp_path_factory, "tiny-other", seed=5)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["calibrate", "--window", "0"], "--window"),
        (["calibrate", "--window", "-5"], "--window"),
        (["calibrate", "--seed", "-1"], "--seed"),
        (["calibrate", "--seed", "abc"], "--seed"),
        (["calibrate", "--tol", "2"], "--tol"),
        (["calibrate", "--method", "steer_harder"], "--method"),
        (["calibrate", "--per-round", "0"], "--per-round"),
        (["calibrate", "--n-prompts", "1"], "--n-prompts"),
        (["calibrate", "--n-prompts", "99"], "--n-prompts"),
        (["calibrate", "--threads", "-2"], "--threads"),
        (["sweep", "--windows", "0"], "--windows"),
        (["sweep", "--windows", "abc"], "--windows"),
        (["sweep", "--seeds", "-1"], "--seeds"),
        (["sweep", "--methods", "nosuch"], "--methods"),
        (["sweep", "--alphas", "-1"], "--alphas"),
        (["sweep", "--alphas", "2"], "--alphas"),
        (["sweep", "--horizon", "10"], "--horizon"),
        (["sweep", "--n-heldout", "0"], "--n-heldout"),
        (["study", "--windows", "0"], "--windows"),
        (["calibrate", "--model", "../no/such/folder"], "--model"),
        (["calibrate", "--device", "tpu9"], "--device"),
    ],
)
def test_bad_flags_fail_in_one_line_before_a_model_loads(args, flag, tmp_path, capsys, no_load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = 2 if args[-1] == "abc" and args[1] == "--seed" else 1  # argparse's own type errors exit 2
    run_refused(args, tmp_path, capsys, code, flag)


def test_cuda_without_a_cuda_torch_fails_early(tmp_path, capsys, no_load, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    run_refused(["calibrate", "--device", "cuda"], tmp_path, capsys, 1, "--device cuda", "--device cpu")


def test_output_paths_are_checked_before_the_work(tmp_path, capsys, no_load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    run_refused(["calibrate", "--out", "a_file/v.safetensors"], tmp_path, capsys, 1, "--out", "a_file")
    run_refused(["calibrate", "--out", "a_dir"], tmp_path, capsys, 1, "--out", "a_dir", "folder")
    run_refused(["sweep", "--out", "a_file"], tmp_path, capsys, 1, "--out", "a_file")
    run_refused(["sweep", "--out", "a_file/below"], tmp_path, capsys, 1, "--out", "a_file")


def test_a_read_only_output_folder_is_refused_early(tmp_path, capsys, no_load, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores mode bits; an immutable folder refuses root too
        if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only folder here (no chattr +i)")
    else:
        ro.chmod(0o555)
    try:
        monkeypatch.chdir(tmp_path)
        run_refused(["calibrate", "--out", "ro/v.safetensors"], tmp_path, capsys, 1, "--out", "cannot write")
        run_refused(["sweep", "--out", "ro/sweep"], tmp_path, capsys, 1, "--out", "cannot write")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        ro.chmod(0o755)


def test_a_hub_id_offline_fails_fast_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    t0 = time.time()
    assert cli.main(["calibrate", "--model", "gpt2", "--out", str(tmp_path / "v.safetensors")]) == 1
    line = one_line_error(capsys, "--model gpt2", "HF_HUB_OFFLINE", "smollm2-135m")
    assert time.time() - t0 < 30, line  # no retries (the check itself takes well under a second)
    assert not (tmp_path / "v.safetensors").exists()


def test_calibrate_with_no_prompts_says_so(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    with pytest.raises(ValueError, match="at least one calibration prompt"):
        calibrate_iso_kl(llama_lm, vec, [], T=20)
    with pytest.raises(ValueError, match="at least 1 generated token"):
        calibrate_iso_kl(llama_lm, vec, prompts.calibration_prompts(0), T=0)


# ---- vectors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tiny_dir, tmp_path_factory):
    """`isokl calibrate` on the tiny local model: a real vector file."""
    out = tmp_path_factory.mktemp("vec") / "v.safetensors"
    code = cli.main(["calibrate", "--model", str(tiny_dir), "--window", "8", "--out", str(out)])
    assert code == exit_of([out])  # 0 exactly when the saved vector converged
    return out


def test_a_saved_vector_is_readable_by_others(calibrated):
    assert calibrated.stat().st_mode & 0o044 == 0o044  # group/other may read (not 0600)


def test_a_truncated_vector_file_is_named(calibrated, tmp_path, capsys):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(calibrated.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.safetensors: not a readable isokl vector file"):
        Vector.load(bad)
    assert cli.main(["generate", "--vector", str(bad), "--prompt", "hi"]) == 1
    one_line_error(capsys, "cut.safetensors")


def test_a_vector_on_another_model_is_refused_unless_transferred(calibrated, tiny_dir, shallow_dir, other_dir, capsys):
    vec = Vector.load(calibrated)
    small = models.load(str(shallow_dir))
    with pytest.raises(ValueError, match=f"fitted on {tiny_dir}.*2 layers"):
        calibrate_iso_kl(small, vec, prompts.calibration_prompts(0), T=4)
    twin = models.from_module(models.load(str(tiny_dir)).model, byte_tokenizer(), id="same-shape-other-id")
    with pytest.raises(ValueError, match="fitted on .*not same-shape-other-id.*for_model"):
        calibrate_iso_kl(twin, vec, prompts.calibration_prompts(0), T=4, progress=False)
    res = calibrate_iso_kl(twin, vec.for_model(twin.id), prompts.calibration_prompts(0), T=4, progress=False)
    assert res.vector.model_id == twin.id and res.c_star > 0 and res.history  # the explicit transfer calibrates there
    capsys.readouterr()
    args = ["generate", "--vector", str(calibrated), "--prompt", "hi", "--tokens", "4", "--model"]
    assert cli.main(args + [str(other_dir)]) == 1  # same shape, another model: refused before it loads
    one_line_error(capsys, "--model", f"fitted on {tiny_dir}", "--allow-other-model")
    assert cli.main(args + [str(other_dir), "--allow-other-model"]) == 0
    capsys.readouterr()
    assert cli.main(args + [str(shallow_dir), "--allow-other-model"]) == 1  # a transfer still needs the same shape
    one_line_error(capsys, "--model", f"fitted on {tiny_dir}", f"{shallow_dir} has 2 layers of width 32", "do not fit")


def test_generate_prints_base_and_steered_continuations_with_kl(calibrated, capsys):
    assert (
        cli.main(
            ["generate", "--vector", str(calibrated), "--prompt", "Tell me about the sea.", "--alpha", "1,2", "--tokens", "12"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "--- alpha 0 (base model)" in out and "--- alpha 1 (c = " in out and "--- alpha 2 (c = " in out
    kl_lines = [x for x in out.splitlines() if x.startswith("KL per token: ")]
    assert len(kl_lines) == 2
    values = [[float(v) for v in x.split(": ")[1].split()] for x in kl_lines]
    assert all(1 <= len(v) <= 12 for v in values) and max(values[1]) > 0  # alpha 2 moves the distribution


# ---- report -----------------------------------------------------------------------------------


def _grid(model_dir, n_heldout: int, horizon: int) -> list[str]:
    """A one-cell grid on a tiny local model: one method, seed 0, window 6."""
    return f"--models {model_dir} --methods mean_diff --seeds 0 --windows 6 --n-heldout {n_heldout} --horizon {horizon}".split()


@pytest.fixture(scope="module")
def swept_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    args = ["sweep", *_grid(tiny_dir, n_heldout=3, horizon=10), "--out", str(out)]
    assert cli.main(args) == 0
    return out, args


def test_a_broken_csv_changes_no_report_file(swept_dir, tmp_path, capsys):
    src, _ = swept_dir
    d = tmp_path / "r"
    shutil.copytree(src, d)
    assert cli.main(["report", str(d)]) == 0
    capsys.readouterr()
    cal = d / "calibration.csv"
    text = cal.read_text()
    header, row = text.splitlines()[:2]
    cells = row.split(",")
    cells[header.split(",").index("c_star")] = "three"
    for broken, names in (
        (text[: text.rindex(",")], ("calibration.csv line 2", "too few fields")),  # truncated mid-row
        (text.replace("c_star", "c_start", 1), ("calibration.csv", "c_star")),  # a column missing
        (header + "\n" + ",".join(cells) + "\n", ("calibration.csv line 2", "c_star")),  # not a number
    ):
        cal.write_text(broken)
        before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "calibration.csv"}
        assert cli.main(["report", str(d)]) == 1
        one_line_error(capsys, *names)
        assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "calibration.csv"} == before


# ---- sweeps: interrupt, resume settings, defaults ------------------------------------------------


def test_a_sweep_run_again_with_other_settings_is_refused_or_recomputed(swept_dir, tmp_path, capsys):
    src, args = swept_dir
    out = tmp_path / "s"
    shutil.copytree(src, out)
    args = [a if a != str(src) else str(out) for a in args]
    before = files_of(out)
    for extra, named in ((["--horizon", "8"], "horizon"), (["--alphas", "1,3"], "alphas"), (["--n-heldout", "2"], "n_heldout")):
        assert cli.main(args + extra) == 1
        one_line_error(capsys, "--out", named, "--recompute")
        assert files_of(out) == before
    assert cli.main(args) == 0  # the same settings: everything is kept, no file rewritten (not even combined ones)
    capsys.readouterr()
    assert files_of(out) == before
    assert cli.main(args + ["--alphas", "1,3", "--recompute"]) == 0
    assert {r["alpha"] for r in records.read(records.path(out, "trajectory"), "trajectory")} == {"1.0", "3.0"}


def test_a_failed_sweep_leaves_no_empty_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "--models", "org/not-cached", "--out", "fresh"]) == 1
    one_line_error(capsys, "org/not-cached")
    assert not (tmp_path / "fresh").exists()


def test_sweep_and_study_default_to_a_run_folder_not_results(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = _grid(tiny_dir, n_heldout=2, horizon=6)
    assert cli.main(["sweep", *args]) == 0
    assert (tmp_path / "runs" / "sweep" / "calibration.csv").exists()
    assert cli.main(["study", *args]) == 0
    assert (tmp_path / "runs" / "study" / "claims.md").exists() and not (tmp_path / "results").exists()
    out = capsys.readouterr().out
    assert "R1:" in out and max(len(x) for x in out.splitlines()) < 400  # verdicts in short, not claims.md


def test_ctrl_c_during_a_sweep_prints_one_line_and_keeps_finished_cells(tiny_dir, tmp_path):
    """Ctrl-C at a cell the sweep reports, not at a moment the test guesses: the cell hook (`tests/ray_pause.py`)
    holds each seeded cell before it is written; the test lets two through and interrupts the sweep while it holds
    the third. So exactly the base cell and those two are kept on any CPU, however fast."""
    import ray_pause

    out, pause = tmp_path / "s", tmp_path / "pause"
    pause.mkdir()
    cmd = [sys.executable, "-m", "isokl.cli", "sweep", "--models", str(tiny_dir), "--methods", "mean_diff"]
    cmd += ["--seeds", "0,1,2,3", "--windows", "6", "--n-heldout", "3", "--horizon", "10", "--out", str(out)]
    env = {**os.environ, **ray_pause.env(pause)}
    p = subprocess.Popen([*cmd, "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    let_through: list[str] = []
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        held = sorted(f.name.rsplit(".", 2)[0] for f in pause.glob("*.running"))  # CELL.PID.running
        new = [c for c in held if c not in let_through]
        if new and len(let_through) == 2:
            break  # the third seeded cell is held: interrupt the sweep there
        for c in new:
            let_through.append(c)
            (pause / f"go-{c}").touch()
        time.sleep(0.02)
    assert p.poll() is None, p.communicate()[1]
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("isokl: interrupted: ") and "rerun the same command to resume" in last, err
    kept = int(last.split(": ")[2].split()[0])
    on_disk = sorted(c.name for c in (out / "cells").iterdir() if not is_temporary(c))
    base = [c for c in on_disk if "__base__" in c]
    assert kept == len(on_disk) == 3 and len(base) == 1, on_disk
    assert sorted(set(on_disk) - set(base)) == sorted(let_through), (on_disk, let_through)


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\nfrom isokl import cli\nfor a in (['--help'], ['--version'], ['report', '--help']):\n"
        "    try: cli.main(a)\n    except SystemExit as e: assert e.code == 0, a\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "calibrate" in r.stdout and "generate" in r.stdout and "isokl 0." in r.stdout
    assert "folder written by `isokl sweep`" in r.stdout  # report --help describes its argument


def test_methods_lists_each_name_once(capsys):
    from isokl.core.methods import METHODS

    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split()[0] for x in lines] == sorted(METHODS)  # one line per method, its name first
    assert all(x.split()[1] != x.split()[0] + ":" for x in lines)  # the summary does not repeat the name


def test_an_abbreviated_flag_is_refused_not_overridden_by_quick(tmp_path, capsys, no_load, monkeypatch):
    """`--quick --window 50` once ran T = 20 (argparse took --window for --windows, the preset did not see it)."""
    from isokl import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["study", "--quick", "--window", "50", "--out", "o"])
    assert e.value.code == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "--window" in err[0], err
    assert not (tmp_path / "o").exists()
    args = cli.build_parser().parse_args(["study", "--quick", "--windows", "50"])
    cfg = cli.to_config(args, cli.StudyConfig)
    cfg.apply_quick(cli.given_flags(["study", "--quick", "--windows", "50"], cli.StudyConfig))
    assert cfg.windows == "50" and cfg.models == "smollm2-135m"  # the explicit flag wins, the rest of the preset applies


def test_check_and_generate_run_a_vector_in_the_dtype_it_was_calibrated_in(tiny_dir, tmp_path, capsys):
    """One dtype policy: the vector's calibration dtype unless --dtype says otherwise, printed by every verb; the
    printed check is `isokl.check`'s result."""
    import isokl

    vec = tmp_path / "bf16.safetensors"
    args = ["calibrate", "--model", str(tiny_dir), "--window", "6", "--dtype", "bfloat16", "--no-judge", "--out", str(vec)]
    assert cli.main(args) == exit_of([vec])
    assert Vector.load(vec).calibration.dtype == "bfloat16"
    (tmp_path / "p.txt").write_text("Tell me about rivers.\nDescribe a quiet library.\nWhat is a good breakfast?\n")
    capsys.readouterr()
    for extra, shown in (([], "bfloat16 (the vector's calibration dtype)"), (["--dtype", "float32"], "float32 (--dtype)")):
        code = cli.main(["check", str(vec), "--prompts", str(tmp_path / "p.txt"), *extra])
        out = capsys.readouterr().out
        assert shown in out and code == (0 if "IN BAND" in out else 2)
        assert cli.main(["generate", "--vector", str(vec), "--prompt", "hi", "--tokens", "3", "--alpha", "1", *extra]) == 0
        assert shown in capsys.readouterr().out
    lm = models.load(str(tiny_dir), dtype=torch.bfloat16)
    v = Vector.load(vec)
    r = isokl.check(
        lm,
        v,
        [prompts.Prompt(user=u) for u in ("Tell me about rivers.", "Describe a quiet library.", "What is a good breakfast?")],
    )
    cli.main(["check", str(vec), "--prompts", str(tmp_path / "p.txt")])
    out = capsys.readouterr().out
    assert f"p95 = {r.p95:.4f}  [{r.lo:.3f}, {r.hi:.3f}]" in out and r.dtype == "bfloat16" and r.window == v.calibration.window
    assert (r.in_band, r.above_target) == ("IN BAND" in out, int(out.split("exceeds 1: ")[1].split("/")[0]))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        isokl.check(lm, v, [prompts.Prompt(user="one")])
    assert run_refused(
        ["check", str(vec), "--prompts", str(tmp_path / "p.txt"), "--dtype", "half"], tmp_path, capsys, 1, "--dtype"
    )


def test_calibrate_check_and_generate_resolve_the_model_id_once(tiny_dir, tmp_path, capsys, monkeypatch):
    """One resolution per verb (a hub id costs a request each time): the Source found first is the one loaded."""
    from isokl.core.model import bundled

    calls = []
    real = bundled.resolve

    def counting(model_id, flag="--model"):
        calls.append(model_id)
        return real(model_id, flag)

    monkeypatch.setattr(bundled, "resolve", counting)
    monkeypatch.setattr(models, "resolve", counting)
    vec = tmp_path / "v.safetensors"
    cli.main(["calibrate", "--model", str(tiny_dir), "--layers", "1-2", "--window", "4", "--no-judge", "--out", str(vec)])
    assert calls == [str(tiny_dir)] and Vector.load(vec).layers == (1, 2)
    (tmp_path / "p.txt").write_text("Tell me about rivers.\nDescribe a quiet library.\n")
    for args in (
        ["check", str(vec), "--prompts", str(tmp_path / "p.txt")],
        ["generate", "--vector", str(vec), "--prompt", "hi", "--tokens", "2", "--alpha", "1"],
        ["generate", "--vector", str(vec), "--prompt", "hi", "--tokens", "2", "--alpha", "1", "--model", str(tiny_dir)],
    ):
        calls.clear()
        cli.main(args)
        assert calls == [str(tiny_dir)], args
    capsys.readouterr()
