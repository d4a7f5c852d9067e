"""Sweep: models x methods x seeds x windows -> tidy CSV files under OUT/ (resumable; DESIGN.md s.4-6).

Each cell (model, method, seed, window) extracts a vector from the seed's 4 contrast
pairs, calibrates it on the seed's 4 calibration prompts, then measures on the fixed
held-out sets at alpha = 1 and 2 (c = alpha x c*): per-token KL trajectories (50 tokens), base
NLL of the steered rollouts, branch_pmass at forks, target-axis logits. Dose 0 (the
base model) depends only on the model and is computed once per model. The serial sweep
calibrates the methods (and the control) of one (model, seed, window) together, one batch
per solver round (`CellRunner`); each cell still writes only its own rows.

Files: every cell writes its rows into OUT/cells/<cell>/ through a temporary folder that
is renamed when the cell is complete, so a killed sweep loses at most the running cell
and never leaves a half-written file. After each cell the combined OUT/*.csv files are
rebuilt (written to a temporary name, then renamed) from all finished cells in a fixed
order, so an interrupted-and-resumed sweep writes the same rows as an uninterrupted one.
Every cell also records its settings (`records.SETTINGS`); a rerun with other settings
is refused, naming each difference, unless `recompute` asks to redo those cells.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import time
from pathlib import Path

from ..core.calibrate import CalibrationResult, calibrate_iso_kl, calibrate_many
from ..core.extract import extract
from ..core.formats.concept import Concept
from ..core.formats.vector import Vector
from ..core.methods import get_method
from ..core.model.files import folder
from ..core.model.models import LM, load
from ..core.runtimes.rollout import NonFiniteKL
from .config import SweepConfig
from .measures import MEASURES, HeldOut, held_out_many, history_rows
from .metrics import FORKS, SUFFIX
from .plan import Plan
from .progress import Progress
from .records import (
    BASE,
    TARGET,
    TOL,
    cell_hook,
    cell_name,
    cell_settings,
    code_version,
    combine,
    finished_cells,
    holdout_columns,
    remove_stale,
    settings_diff,
    source_hash,
    write_cell,
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: `kept` finished cells are on disk; rerunning the same command resumes."""

    def __init__(self, out: Path, kept: int):
        super().__init__(f"interrupted: {kept} finished cells kept in {out}/; rerun the same command to resume")
        self.out, self.kept = out, kept


class SettingsChanged(ValueError):
    pass


def settings(plan: Plan, window: int | None = None) -> dict:
    """Everything that changes the rows of a cell of this window (None: the base cell), as recorded in each cell
    (code version: recorded, not compared). Keys added after v2 (`records.LEGACY_SETTINGS`) read as their v2 value
    in cells that predate them."""
    n = plan.n_heldout
    concept = plan.concept
    doses = sorted(set(plan.alpha_values(window)) - set(plan.pmass_alphas))
    words = concept.words_hash()
    return {
        "concept": concept.name,
        "n_calibration": plan.n_calibration,
        "n_heldout": n["heldout_generic"] if len(set(n.values())) == 1 else n,
        "horizon": plan.horizon,
        "alphas": list(plan.pmass_alphas),
        **({"dose_alphas": doses} if doses else {}),  # absent where a cell has no further doses (as before v2)
        "measures": sorted(MEASURES),  # a new metric makes older cells differ: they lack its file
        "forks": [f for f in FORKS if f <= plan.horizon],
        "pmass_suffix": SUFFIX,
        "target": TARGET,
        "tol": TOL,
        "dtype": "float32",
        # the seeded draws depend on the whole pairs and calibration pools; held-out sets use their first n prompts
        "prompt_pools": concept.hashes(n),
        **({"sentiment_words": words} if words else {}),  # the concept's answer words (the key predates concepts)
        "code_version": code_version(),
        "source_hash": source_hash(),
    }


def measure(
    lm: LM,
    vector,
    coeffs: tuple[float, ...],
    alphas: tuple[float, ...],
    plan: Plan,
    prov: dict,
    phase=lambda s: None,
    held: HeldOut | None = None,
) -> tuple[dict[str, list[dict]], HeldOut]:
    """Every registered measure (`measures.MEASURES`) at c = alpha x c* -> (rows per file, the shared HeldOut); held: one
    prepared in a joint batch with other cells' vectors (`measures.held_out_many`)."""
    pm = plan.pmass_alphas if vector is not None else (0.0,)
    if held is None:
        held = HeldOut(lm, vector, coeffs, alphas, plan.n_heldout, plan.horizon, prov, pmass_alphas=pm, concept=plan.concept)
    held.prov = prov
    rows = {}
    for file, (label, fn) in MEASURES.items():
        phase(label)
        rows[file] = fn(held)
    return rows, held


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cell_vector(lm: LM, method: str, seed: int, plan: Plan):
    """A cell's uncalibrated vector: fitted on the seed's contrast pairs of the run's concept (a seeded control draws
    its direction from the same seed)."""
    seeded: dict = {"seed": seed} if "seed" in get_method(method).config else {}
    return extract(lm, plan.concept.pairs(seed), method, **seeded)


def run_cell(
    lm: LM,
    vector,
    method: str,
    seed: int,
    window: int,
    plan: Plan,
    version: str,
    phase=lambda s: None,
    calibrated: tuple[CalibrationResult, float] | None = None,
    held: HeldOut | None = None,
):
    """A cell's rows: calibrate `vector` (or take `calibrated` = its result from a joint calibration and this cell's
    share of that calibration's and its held-out batch's seconds), then every measure at the cell's doses (held: the
    cell's HeldOut from that joint batch)."""
    t0 = time.time()
    concept = plan.concept
    prov = {
        "model": lm.id,
        "concept": concept.name,
        "method": method,
        "seed": seed,
        "window": window,
        "code_version": version,
        "time": _now(),
    }

    def on_eval(s, secs):
        phase(
            f"calibrating: evaluation {len(evals) + 1} (took {secs:.0f} s) gave p95 {'=' if s.complete else '>'} {s.p95:.3f} "
            f"at c = {s.c:.4g}"
        )
        evals.append(s)

    evals: list = []
    if calibrated is None:
        phase("calibrating")
        res = calibrate_iso_kl(lm, vector, cell_prompts(plan, seed), T=window, target=TARGET, tol=TOL, progress=on_eval)
        shared = 0.0  # this cell's own calibration is inside its wall time
    else:
        res, shared = calibrated
    alphas = plan.alpha_values(window)
    rows, held = measure(lm, res.vector, tuple(a * res.c_star for a in alphas), alphas, plan, prov, phase, held)
    holdout = held.generic.stats(alphas.index(1.0), window).p95  # the first T held-out tokens at c*
    at_1x = held.generic.stats(alphas.index(1.0)).per_prompt  # [prompt t] all `horizon` tokens: every held-out window
    assert at_1x is not None
    rows["history"] = history_rows(res, prov)
    rows["calibration"] = [
        {
            **prov,
            "layers": " ".join(map(str, vector.layers)),
            "c_star": res.c_star,
            "c_star_lo": res.c_interval.lo,
            "c_star_hi": res.c_interval.hi,
            "converged": int(res.converged),
            "status": res.status,
            "calib_p95": res.p95,
            "holdout_p95": holdout,
            **holdout_columns(at_1x),
            "evaluations": res.evaluations,
            "seconds": round(time.time() - t0 + shared, 1),
        }
    ]
    return rows


def cell_prompts(plan: Plan, seed: int) -> list:
    """A cell's calibration prompts: the seed's draw from the concept (the same for every method of that seed)."""
    return plan.concept.calibration(seed, plan.n_calibration)


def run_base(lm: LM, plan: Plan, version: str, phase=lambda s: None) -> dict[str, list[dict]]:
    prov = {
        "model": lm.id,
        "concept": plan.concept.name,
        "method": BASE,
        "seed": "",
        "window": "",
        "code_version": version,
        "time": _now(),
    }
    rows, _ = measure(lm, None, (0.0,), (0.0,), plan, prov, phase)
    return rows


def check_resume(out: Path, expected: dict[str, dict], now: dict, recompute: bool) -> list[str]:
    """Finished cells whose settings differ from this run's (`expected` per cell of the grid, `now` for any other):
    refused (SettingsChanged), or with `recompute` the names to redo. Cells of another code version are only counted (every row carries its version)."""
    differ: dict[str, list[str]] = {}
    outside: list[str] = []
    versions: dict[str, int] = {}
    for cell in finished_cells(out):
        rec = cell_settings(cell)
        diff = settings_diff(rec, expected.get(cell.name, now))
        if rec and rec.get("source_hash") != now["source_hash"]:
            versions[rec.get("code_version", "?")] = versions.get(rec.get("code_version", "?"), 0) + 1
        if diff and cell.name in expected:
            differ[cell.name] = diff
        elif diff:
            outside.append(cell.name)
    if outside:
        raise SettingsChanged(
            f"--out {out}: {len(outside)} finished cells outside this grid have other settings "
            f"(e.g. {outside[0]}: {settings_diff(cell_settings(out / 'cells' / outside[0]), now)[0]}); "
            "use a fresh --out folder"
        )
    if differ and not recompute:
        first, diff = next(iter(differ.items()))
        raise SettingsChanged(
            f"--out {out}: {len(differ)} finished cells were computed with other settings "
            f"({first}: {'; '.join(diff)}); use a fresh --out folder, or --recompute to redo them"
        )
    if versions:
        print(
            f"[isokl] note: {sum(versions.values())} finished cells came from other code "
            f"({', '.join(f'{v}: {k}' for v, k in sorted(versions.items()))}); each row records its code_version",
            file=sys.stderr,
        )
    return sorted(differ)


CONCEPT_DIR = "concept"  # OUT/concept/: a copy of a user's concept files, so the folder says what it measured


def snapshot_concept(concept: Concept, out: Path) -> None:
    """Copy a user's concept files into OUT/concept/ (the report reads the prompts' texts there); a built-in
    concept ships with isokl and is not copied."""
    if concept.builtin:
        return
    src, dst = Path(concept.source), out / CONCEPT_DIR
    with folder(dst) as tmp:
        for f in ("concept.json", "pairs.jsonl", *sorted(concept.own)):
            if (src / f).is_file():
                shutil.copyfile(src / f, tmp / f)


def prepare(plan: Plan) -> tuple[Path, dict, dict[str, dict], list[tuple], list[tuple]]:
    """Before any cell runs (serial or on a cluster): the folder, this run's settings, each cell's expected settings,
    the grid and the cells still to do; half-written cells of a killed run are removed, and finished cells with
    other settings refused (or removed with --recompute)."""
    out = plan.out
    now = settings(plan)
    grid = list(plan.cells)
    models = list(dict.fromkeys(g[0] for g in grid))
    expected = {cell_name(*g): settings(plan, g[3]) for g in grid} | {cell_name(m, BASE, "", ""): now for m in models}
    remove_stale(out)
    for name in check_resume(out, expected, now, plan.recompute):
        shutil.rmtree(out / "cells" / name)
    snapshot_concept(plan.concept, out)
    todo = [g for g in grid if not (out / "cells" / cell_name(*g)).exists()]
    return out, now, expected, grid, todo


class CellRunner:
    """Runs cells of one sweep, the serial loop's and each Ray worker's alike: keeps one model loaded (checking the
    concept against it when it loads) and each (method, seed)'s fitted vector, and returns a cell's rows.

    The methods of one (model, seed, window) of the grid (the control included) are calibrated jointly
    (`calibrate_many`, one batch per solver round) when the first of their cells runs here; each cell then takes its
    own result and writes its rows as before, so cells stay atomic and resumable. The group is always the grid's
    whole group, finished cells included, so a cell's result does not depend on which cells a resumed run or a Ray
    worker still had to do (the finished cells' results are recomputed and dropped)."""

    def __init__(self, plan: Plan, version: str, loader=load):
        self.plan, self.version, self.loader = plan, version, loader
        self.lm: LM | None = None
        self.vectors: dict[tuple[str, int], object] = {}
        self.groups: dict[tuple, list[str]] = {}  # (model, seed, window) -> the methods calibrated together
        for model_id, method, seed, window in plan.cells:
            self.groups.setdefault((model_id, seed, window), []).append(method)
        self.joint: dict[tuple, tuple[CalibrationResult, float, HeldOut]] = {}  # cell -> (result, seconds share, HeldOut)

    def model(self, model_id: str) -> LM:
        if self.lm is None or self.lm.id != model_id:
            self.lm, self.vectors, self.joint = None, {}, {}  # one model in memory at a time
            lm = self.loader(model_id, device=self.plan.device)
            self.plan.concept.check_for(lm, self.plan.horizon, self.plan.n_heldout)
            self.lm = lm
        return self.lm

    def vector(self, lm: LM, method: str, seed: int, phase=lambda s: None):
        if (method, seed) not in self.vectors:
            phase("extracting the vector")
            self.vectors[(method, seed)] = cell_vector(lm, method, seed, self.plan)
        return self.vectors[(method, seed)]

    def run(self, model_id: str, method: str, seed, window, phase=lambda s: None) -> dict[str, list[dict]]:
        """The rows of cell (model, method, seed, window); method BASE: the model's base cell."""
        lm = self.model(model_id)
        if method == BASE:
            return run_base(lm, self.plan, self.version, phase)
        key = (model_id, method, seed, window)
        group = self.groups.get((model_id, seed, window), [])
        if len(group) > 1 and method in group and key not in self.joint:
            self.calibrate_jointly(lm, model_id, group, seed, window, phase)
        joint = self.joint.pop(key, None)
        if joint is not None and joint[0].status == "non_finite":
            raise NonFiniteKL(joint[0].error)  # as its own calibration would (the other methods' cells are unaffected)
        vec = self.vector(lm, method, seed, phase)
        calibrated, held = (joint[:2], joint[2]) if joint is not None else (None, None)
        return run_cell(lm, vec, method, seed, window, self.plan, self.version, phase, calibrated, held)

    def calibrate_jointly(self, lm: LM, model_id: str, methods: list[str], seed: int, window: int, phase) -> None:
        vecs = [self.vector(lm, m, seed, phase) for m in methods]
        done: dict[int, int] = {}

        def on_eval(j, s, secs):
            done[j] = done.get(j, 0) + 1
            phase(
                f"calibrating {len(methods)} methods jointly: {methods[j]} evaluation {done[j]} (round took {secs:.0f} s) "
                f"gave p95 {'=' if s.complete else '>'} {s.p95:.3f} at c = {s.c:.4g}"
            )

        joint = calibrate_many(lm, vecs, cell_prompts(self.plan, seed), T=window, target=TARGET, tol=TOL, progress=on_eval)
        # The held-out rollouts and probe forwards of the group's calibrated vectors in one batch too (a non-finite
        # vector is left out: its cell raises, as its own calibration would)
        t1 = time.time()
        alphas = self.plan.alpha_values(window)
        ok = [(m, r) for m, r in zip(methods, joint.results, strict=True) if r.status != "non_finite"]
        phase(f"held-out rollouts of {len(ok)} methods in one batch")
        items: list[tuple[Vector, tuple[float, ...], tuple[float, ...], dict]] = [
            (r.vector, tuple(a * r.c_star for a in alphas), alphas, {}) for _, r in ok
        ]
        plan = self.plan
        helds = held_out_many(lm, items, plan.n_heldout, plan.horizon, plan.concept, pmass_alphas=plan.pmass_alphas)
        for h in helds:
            _ = (h.generic, h.axis)  # computed here, inside the timed batch
        share = (joint.seconds + time.time() - t1) / len(methods)  # each cell's `seconds`: its share of the joint work
        held_of = {m: h for (m, _), h in zip(ok, helds, strict=True)}
        for m, res in zip(methods, joint.results, strict=True):
            self.joint[(model_id, m, seed, window)] = (res, share, held_of.get(m))  # type: ignore[assignment]


def run_sweep(cfg: SweepConfig | Plan, stop_after: int | None = None, loader=None, progress: Progress | None = None) -> Path:
    """Run every unfinished cell of a Plan (a SweepConfig is resolved first, once); `stop_after` stops after that many
    new cells, as a kill would. loader: a function (model id, device=) -> LM for ids `models.load` does not know (a
    model already in memory, a tiny test model); None: `models.load`, and --models is checked against the ids it
    knows before anything runs."""
    import torch

    plan = cfg if isinstance(cfg, Plan) else cfg.resolve(models=loader is None)
    loader = loader or load
    out, now, expected, grid, todo = prepare(plan)
    bar = progress or Progress(len(grid), len(grid) - len(todo))
    bar.note(
        f"sweep: {len(grid)} cells, {len(grid) - len(todo)} already done, writing {out}/ ({torch.get_num_threads()} threads)"
    )
    runner = CellRunner(plan, code_version(), loader)
    new = 0
    try:
        for model_id in dict.fromkeys(g[0] for g in todo):
            bar.phase(model_id, "loading the model")
            lm = runner.model(model_id)
            base = cell_name(lm.id, BASE, "", "")
            if not (out / "cells" / base).exists():
                t1 = time.time()
                write_cell(out, base, runner.run(model_id, BASE, "", "", lambda s, name=lm.id: bar.phase(f"{name} base", s)), now)
                bar.note(f"{lm.id}: base rollouts and scores ({time.time() - t1:.0f} s, {torch.get_num_threads()} threads)")
            for _, method, seed, window in [g for g in todo if g[0] == model_id]:
                label = f"{model_id} {method} seed {seed} T={window}"
                t1 = time.time()
                rows = runner.run(model_id, method, seed, window, lambda s, label=label: bar.phase(label, s))
                name = cell_name(model_id, method, seed, window)
                cell_hook(name)
                write_cell(out, name, rows, expected[name])
                combine(out)
                new += 1
                cal = rows["calibration"][0]
                bar.cell_finished(
                    f"{label}: c* = {cal['c_star']:.4g} ({cal['status']}, {cal['evaluations']} evals), calib p95 = "
                    f"{cal['calib_p95']:.3f}, holdout p95 = {cal['holdout_p95']:.3f} [{time.time() - t1:.0f} s, "
                    f"{torch.get_num_threads()} threads]"
                )
                if stop_after is not None and new >= stop_after:
                    return out
    except KeyboardInterrupt:
        raise Interrupted(out, len(finished_cells(out))) from None
    finally:
        if progress is None:
            bar.close()
    if finished_cells(out):
        combine(out)  # writes only files whose rows changed (a finished folder stays byte for byte as it is)
    return out
