"""The sweep on a real local Ray cluster (not mocks): the same rows as the serial sweep, a worker killed mid-cell,
a driver killed and started again. Tiny random models saved as local folders, 2 workers x 1 CPU."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ray_pause
from conftest import byte_tokenizer, tiny_model, write_concept
from isokl.core.model.files import is_temporary
from isokl.study import records
from isokl.study.cluster import run_sweep_ray
from isokl.study.sweep import SweepConfig, run_sweep

GRID = dict(methods="mean_diff,pca", seeds="0,1", windows="6", n_heldout="3", horizon=10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model("llama", dtype=torch.float32, seed=3).save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    write_concept(d.parent / "formality")
    return d


def _cfg(model_dir, out) -> SweepConfig:
    """The grid on a user's concept (a folder next to the model): workers read it as the serial run does."""
    return SweepConfig(models=str(model_dir), out=str(out), concept=str(model_dir.parent / "formality"), **GRID)


@pytest.fixture(scope="module")
def serial(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker (1 CPU per cell): the same float rounding
    try:
        run_sweep(_cfg(model_dir, out))
    finally:
        torch.set_num_threads(threads)
    return records.load(out)


def _same_rows(out: Path, serial) -> None:
    got = records.load(out)
    drop = {"time", "seconds"}
    for name, rows in serial.items():
        strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]
        assert strip(got[name]) == strip(rows), name
    cells = out / "cells"
    assert not [p for p in cells.iterdir() if is_temporary(p)], "a half-written cell was left behind"
    assert len(list(cells.iterdir())) == 5  # 4 cells + the model's base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_grid_through_ray_equals_the_serial_run(model_dir, serial, tmp_path):
    out, failed = run_sweep_ray(_cfg(model_dir, tmp_path / "r"), "local", cpus_per_cell=1)
    assert failed == {}
    _same_rows(out, serial)


def test_a_worker_killed_mid_cell_still_yields_the_complete_grid(model_dir, serial, tmp_path, monkeypatch):
    import threading

    pause = tmp_path / "pause"
    pause.mkdir()
    for k, v in ray_pause.env(pause).items():  # the workers this driver starts inherit the hook
        monkeypatch.setenv(k, v)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=run_sweep_ray(_cfg(model_dir, tmp_path / "k"), "local")))
    t.start()
    deadline = time.time() + 90
    while not list(pause.glob("*.running")) and time.time() < deadline:
        time.sleep(0.05)
    marker = sorted(pause.glob("*.running"))[0]  # a worker in the middle of a cell, before it writes
    os.kill(int(marker.name.rsplit(".", 2)[1]), signal.SIGKILL)
    (pause / "go").touch()
    t.join(timeout=120)
    out, failed = result["r"]
    assert failed == {}  # the dead worker was restarted and its cell retried
    _same_rows(out, serial)


def test_a_second_driver_resumes_after_the_first_is_killed(model_dir, serial, tmp_path):
    pause, out = tmp_path / "pause", tmp_path / "d"
    pause.mkdir()
    cmd = [sys.executable, "-m", "isokl.cli", "sweep", "--models", str(model_dir), "--out", str(out), "--ray"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in GRID.items()] + ["--concept", _cfg(model_dir, out).concept]
    env = {**os.environ, **ray_pause.env(pause), "ISOKL_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not list(pause.glob("*.running")) and time.time() < deadline:
            time.sleep(0.05)
        one = sorted(pause.glob("*.running"))[0].name.rsplit(".", 2)[0]
        (pause / f"go-{one}").touch()  # let exactly one cell finish
        while not (out / "cells" / one).is_dir() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the cluster it started
        first.wait()
    for pid in {int(p.name.rsplit(".", 2)[1]) for p in pause.glob("*.running")}:  # its workers end with their raylet
        while _alive(pid) and time.time() < deadline + 30:
            time.sleep(0.1)
    done = {p.name for p in (out / "cells").iterdir() if not is_temporary(p)}
    assert one in done and len(done) < 5
    (pause / "go").touch()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    # It ran only the cells not finished when it started: at most the 5 - len(done) counted here, since a worker of
    # the first cluster that was still computing (no .running file yet) may write its cell once `go` exists.
    ran = re.search(r"(\d+) of 5 cells to run", second.stderr)
    assert ran is not None and 1 <= int(ran.group(1)) <= 5 - len(done), second.stderr[-2000:]
    _same_rows(out, serial)
    shutil.rmtree(pause)


def test_a_cell_that_fails_is_reported_and_the_rest_of_the_grid_finishes(model_dir, tmp_path, capsys):
    from isokl import cli

    broken = tmp_path / "nan-llama"
    model = tiny_model("llama", dtype=torch.float32, seed=3)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))  # every steered KL is NaN
    model.save_pretrained(broken)
    byte_tokenizer().save_pretrained(broken)
    out = tmp_path / "f"
    args = ["sweep", "--models", f"{model_dir},{broken}", "--methods", "mean_diff", "--seeds", "0", "--windows", "6"]
    args += ["--n-heldout", "3", "--horizon", "10", "--out", str(out), "--ray"]
    assert cli.main(args) == 1  # the grid is not complete
    err = capsys.readouterr().err
    assert "failed: " in err and "nan-llama__mean_diff__s0__T6" in err and "NonFiniteKL" in err
    cal = records.load(out)["calibration"]
    assert [r["model"] for r in cal] == [str(model_dir)]  # the good model's cell finished and was combined


def test_without_ray_the_flag_says_how_to_install_it_and_the_serial_path_never_imports_it(
    model_dir, tmp_path, monkeypatch, capsys
):
    from isokl import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    args = ["sweep", "--models", str(model_dir), "--methods", "mean_diff", "--seeds", "0", "--windows", "6"]
    args += ["--n-heldout", "2", "--horizon", "6", "--out", str(tmp_path / "x")]
    assert cli.main(args + ["--ray"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--ray" in err and "isokl[cluster]" in err
    assert not (tmp_path / "x").exists()
    code = f"import sys; from isokl import cli; rc = cli.main({args!r}); assert rc == 0; assert 'ray' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "ISOKL_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-1500:]
