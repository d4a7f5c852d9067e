"""Cluster: a sweep's cells as Ray work (`isokl sweep --ray [ADDRESS]`); Ray is the optional extra `isokl[cluster]`.

The driver (this process) does what the serial sweep does before and after the cells:
`sweep.prepare` (resume rules, settings checked, half-written cells removed) and
`records.combine` after every finished cell, so the folder and its rows are those of a
serial run. The cells run in `Worker` actors, one per `--cpus-per-cell` (and
`--gpus-per-cell`) slot of the cluster. A worker keeps one model loaded and is given
that model's cells while any are left (a model loads once per worker, not once per
cell), and the rest of its last cell's calibration group (a worker calibrates a group's methods
jointly, `sweep.CellRunner`); each model's base cell is one task. A worker writes each finished cell itself,
atomically (`records.write_cell`), into the output folder, which must be on a filesystem
every node shares.

Faults: a worker that dies mid-cell is restarted and the cell retried (Ray's actor
restarts, up to RETRIES); its half-written folder is never renamed into place. A cell
that raises (e.g. a NaN KL) is reported with its error and the rest of the grid goes on;
`run_sweep_ray` returns the failed cells and the command exits 1 when the grid is not
complete. A driver killed and started again resumes like the serial sweep.

Security: isokl never changes Ray's authentication. A local cluster started here gets
Ray's token (2.59+: on by default for local clusters); for a multi-node cluster see the
docs/cluster.md (RAY_AUTH_MODE=token on every node, the token file copied to each).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path

from .config import SweepConfig
from .flags import ConfigError, need_ray
from .plan import Plan
from .progress import Progress, fmt_duration
from .records import BASE, cell_hook, cell_name, code_version, combine, finished_cells, source_hash, write_cell

RETRIES = 2  # restarts of a dead worker, each retrying its cell


class Worker:
    """One slot of the cluster: runs cells of the sweep, one model loaded at a time."""

    def __init__(self, plan: Plan, expected: dict[str, dict], threads: int, driver_source: str):
        from ..core.model.models import set_threads

        if source_hash() != driver_source:  # a node with other isokl code would mix versions silently
            raise RuntimeError(
                f"isokl on this worker ({code_version()}, source {source_hash()}) differs from the driver's "
                f"(source {driver_source}); install the same isokl on every node"
            )
        set_threads(threads)
        from .sweep import CellRunner

        self.plan, self.expected = plan, expected  # the driver's Plan, whole: a worker parses no flag
        self.runner = CellRunner(plan, code_version())

    def pid(self) -> int:
        return os.getpid()

    def run(self, cell: tuple) -> dict:
        model, method, seed, window = cell
        t0 = time.time()
        rows = self.runner.run(model, method, seed, window)
        name = cell_name(model, method, seed, window)
        cell_hook(name)
        write_cell(self.plan.out, name, rows, self.expected[name])
        cal = rows.get("calibration", [{}])[0]
        return {"name": name, "seconds": time.time() - t0, "pid": os.getpid(), **{k: cal.get(k) for k in ("c_star", "status")}}


def connect(address: str, threads_hint: int):
    """Join a running cluster (`auto` or HOST:PORT) or start a local one (address 'local')."""
    ray = need_ray()
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        print(
            "[isokl] warning: RAY_AUTH_MODE=disabled: anyone who can reach this Ray cluster can run code on it",
            file=sys.stderr,
        )
    kw = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    if address == "local":
        ray.init(num_cpus=threads_hint, **kw)
    else:
        ray.init(address=address, **kw)
    return ray


def run_sweep_ray(
    cfg: SweepConfig | Plan, address: str, cpus_per_cell: int = 1, gpus_per_cell: float = 0.0, workers: int = 0
) -> tuple[Path, dict[str, str]]:
    """Every unfinished cell of the grid on a Ray cluster -> (the folder, {cell: error} of the cells that failed); a
    SweepConfig is resolved into its Plan first, once."""
    from ..core.model.models import available_cores
    from .sweep import Interrupted, prepare

    plan = cfg if isinstance(cfg, Plan) else cfg.resolve()
    out, _, expected, grid, todo = prepare(plan)
    ray = connect(address, available_cores())
    try:
        return out, _drive(ray, plan, out, expected, grid, todo, cpus_per_cell, gpus_per_cell, workers)
    except KeyboardInterrupt:
        raise Interrupted(out, len(finished_cells(out))) from None
    finally:
        ray.shutdown()


def _drive(ray, plan: Plan, out, expected, grid, todo, cpus_per_cell, gpus_per_cell, n_workers) -> dict[str, str]:
    from dataclasses import replace

    models = list(dict.fromkeys(g[0] for g in grid))
    cells = [(m, BASE, "", "") for m in models if not (out / "cells" / cell_name(m, BASE, "", "")).exists()]
    cells += [(m, meth, s, w) for m, meth, s, w in todo]
    cells.sort(key=lambda c: models.index(c[0]))  # a model's base first, then its cells
    total, done0 = len(grid) + len(models), len(grid) + len(models) - len(cells)
    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 1) // max(cpus_per_cell, 1))
    if gpus_per_cell > 0:
        slots = min(slots, int(resources.get("GPU", 0) // gpus_per_cell))
    if slots < 1:
        raise ConfigError(
            f"--cpus-per-cell {cpus_per_cell} / --gpus-per-cell {gpus_per_cell}: the cluster has {resources.get('CPU', 0)} "
            f"CPUs and {resources.get('GPU', 0)} GPUs, not enough for one cell"
        )
    n = min(n_workers or slots, slots, len(cells)) if cells else 0
    bar = Progress(total, done0)
    bar.note(
        f"cluster: {len(cells)} of {total} cells to run (bases included) on {n} workers x {cpus_per_cell} CPU"
        + (f" + {gpus_per_cell} GPU" if gpus_per_cell else "")
        + f", writing {out}/"
    )
    actor = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_restarts=RETRIES, max_task_retries=RETRIES)(Worker)
    # the Plan whole (its concept already loaded), the folder absolute: a worker's working folder need not be the driver's
    spec = replace(plan, out=plan.out.resolve())
    pool = [actor.remote(spec, expected, max(cpus_per_cell, 1), source_hash()) for _ in range(n)]
    queue = deque(cells)
    loaded: dict[int, str] = {}
    held: dict[int, tuple] = {}  # worker -> the (model, seed, window) group of its last cell
    group = lambda c: (c[0], c[2], c[3])
    running: dict = {}
    failed: dict[str, str] = {}
    t0, finished = time.time(), 0

    def give(i: int) -> None:
        if not queue:
            return
        # the rest of the worker's calibration group first (calibrated jointly there, `CellRunner`), then a group no
        # other worker holds on the worker's model, then an unloaded model, then anything
        others = {held[j] for j in held if j != i}
        pick = next((c for c in queue if c[1] != BASE and group(c) == held.get(i)), None)
        pick = pick or next((c for c in queue if c[0] == loaded.get(i) and group(c) not in others), None)
        pick = pick or next((c for c in queue if c[0] == loaded.get(i)), None)
        pick = pick or next((c for c in queue if c[0] not in loaded.values()), queue[0])
        queue.remove(pick)
        loaded[i], held[i] = pick[0], group(pick)
        running[pool[i].run.remote(pick)] = (i, pick)

    for i in range(n):
        give(i)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=30)
        if not ready:
            bar.note(_status(finished, len(running), len(failed), len(cells), t0))
            continue
        ref = ready[0]
        i, cell = running.pop(ref)
        name = cell_name(*cell)
        try:
            res = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the cell itself failed: report it, go on
            failed[name] = _first_line(e)
            bar.note(f"FAILED {name}: {failed[name]}")
        except ray.exceptions.RayActorError as e:  # the worker died more than RETRIES times
            failed[name] = f"worker died ({_first_line(e)})"
            bar.note(f"FAILED {name}: {failed[name]}")
        else:
            combine(out)
            finished += 1
            bar.cell_finished(
                f"{name}: "
                + (f"c* = {res['c_star']:.4g} ({res['status']}), " if res.get("c_star") is not None else "")
                + f"{res['seconds']:.0f} s on worker pid {res['pid']}; {len(running)} running, {len(failed)} failed"
            )
        give(i)
    bar.close()
    if finished:
        combine(out)
    return failed


def _status(finished: int, running: int, failed: int, total: int, t0: float) -> str:
    left = total - finished - failed
    eta = fmt_duration((time.time() - t0) / finished * left) if finished else "after the first cell"
    return f"cluster: {finished} done, {running} running, {failed} failed, {left} left, ETA {eta}"


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]
