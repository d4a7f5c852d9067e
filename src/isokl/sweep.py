"""Sweep: models x methods x seeds x windows -> tidy CSV files under OUT/ (resumable; DESIGN.md s.4-6).

Each cell (model, method, seed, window) extracts a vector from the seed's 4 contrast
pairs, calibrates it on the seed's 4 calibration prompts, then measures on the fixed
held-out sets at doses 1x and 2x of c*: per-token KL trajectories (50 tokens), base
NLL of the steered rollouts, branch_pmass at forks, target-axis logits. Dose 0 (the
base model) depends only on the model and is computed once per model.

Files: every cell writes its rows into OUT/cells/<cell>/ through a temporary folder that
is renamed when the cell is complete, so a killed sweep loses at most the running cell
and never leaves a half-written file. After each cell the combined OUT/*.csv files are
rebuilt (written to a temporary name, then renamed) from all finished cells in a fixed
order, so an interrupted-and-resumed sweep writes the same rows as an uninterrupted one.
"""

from __future__ import annotations

import csv
import datetime
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__, prompts
from .activations import extract
from .calibrate import calibrate_iso_kl
from .metrics import FORKS, branch_pmass, target_logit
from .models import BUNDLED, LM, load
from .rollout import kl_stats, rollout

PROVENANCE = ["model", "method", "seed", "window", "code_version", "time"]
FILES = {  # file -> columns after the provenance columns
    "calibration": ["layers", "c_star", "converged", "status", "calib_p95", "holdout_p95", "evaluations", "seconds"],
    "history": ["eval", "c", "p95", "complete", "t", "per_t_p95", "per_t_max"],
    "trajectory": ["dose", "coeff", "prompt", "t", "kl", "valid"],
    "nll": ["dose", "coeff", "prompt", "nll_sum", "n_tokens"],
    "pmass": ["dose", "coeff", "prompt", "fork_t", "pmass", "p_true", "censored"],
    "target": ["dose", "coeff", "probe", "L"],
}
BASE = "base"  # method name of the dose-0 rows (computed once per model; seed and window empty)


@dataclass
class SweepConfig:
    """Run the grid models x methods x seeds x windows and write tidy CSVs (resumes where it stopped)."""

    models: str = field(default=",".join(BUNDLED), metadata={"help": "comma-separated model ids"})
    methods: str = field(default="mean_diff,pca,directional_ablation", metadata={"help": "comma-separated methods"})
    seeds: str = field(default="0,1,2", metadata={"help": "comma-separated data seeds"})
    windows: str = field(default="20,50", metadata={"help": "comma-separated calibration windows T"})
    doses: str = field(default="1,2", metadata={"help": "doses alpha = c / c* measured besides 0"})
    n_heldout: int = field(default=16, metadata={"help": "prompts per held-out set"})
    horizon: int = field(default=50, metadata={"help": "tokens per held-out rollout (fork points 0, 5, ..., horizon)"})
    out: str = field(default="results", metadata={"help": "output folder"})
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def grid(self) -> list[tuple[str, str, int, int]]:
        return [(m, meth, int(s), int(w)) for m in _split(self.models) for s in _split(self.seeds)
                for meth in _split(self.methods) for w in _split(self.windows)]


def _split(s: str) -> list[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def cell_name(model: str, method: str, seed, window) -> str:
    return f"{model}__{method}__s{seed}__T{window}"


def _write_cell(out: Path, name: str, rows: dict[str, list[dict]]) -> None:
    """All files of one cell, atomically: written into NAME.tmp, then renamed to NAME."""
    final, tmp = out / "cells" / name, out / "cells" / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for fname, rs in rows.items():
        with (tmp / f"{fname}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PROVENANCE + FILES[fname])
            w.writeheader()
            w.writerows(rs)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def combine(out: Path) -> None:
    """Rebuild OUT/<file>.csv from every finished cell, in sorted cell order (deterministic)."""
    cells = sorted(p for p in (out / "cells").iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
    for fname, cols in FILES.items():
        tmp = out / f".{fname}.csv.tmp"
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PROVENANCE + cols)
            w.writeheader()
            for c in cells:
                src = c / f"{fname}.csv"
                if src.exists():
                    with src.open(newline="") as r:
                        w.writerows(csv.DictReader(r))
        os.replace(tmp, out / f"{fname}.csv")


def _enc(lm: LM, pool: str, n: int) -> list[list[int]]:
    ps = prompts.pool(pool)
    if len(ps) < n:
        raise ValueError(f"held-out pool {pool!r} has {len(ps)} prompts, fewer than n_heldout = {n}")
    return lm.encode([lm.format(p) for p in ps[:n]])


def _ids(pool: str, n: int) -> list[str]:
    return [p.id for p in prompts.pool(pool)[:n]]


def measure(lm: LM, vector, coeffs: tuple[float, ...], doses: tuple[float, ...], cfg: SweepConfig, prov: dict):
    """Held-out metrics at the given coefficients (doses = their alpha labels) -> (rows per file, generic rollout)."""
    n, H = cfg.n_heldout, cfg.horizon
    rows: dict[str, list[dict]] = {"trajectory": [], "nll": [], "pmass": [], "target": []}
    gen_ids, tf_ids, probe_ids = _ids("heldout_generic", n), _ids("heldout_truefalse", n), _ids("heldout_sentiment", n)
    ro = rollout(lm, _enc(lm, "heldout_generic", n), H, vector, coeffs)
    for k, (alpha, c) in enumerate(zip(doses, coeffs)):
        sl = ro.rows(k)
        valid = ro.valid[sl].cpu()
        kl = ro.kl[sl].cpu() if ro.kl is not None else torch.zeros_like(valid, dtype=torch.float32)
        nll_src = ro.logp_base if ro.logp_base is not None else ro.logp  # base scores the tokens (dose 0: its own)
        nll = -(nll_src[sl].cpu() * valid)
        for i, pid in enumerate(gen_ids):
            rows["nll"].append({**prov, "dose": alpha, "coeff": c, "prompt": pid, "nll_sum": float(nll[i].sum()),
                                "n_tokens": int(valid[i].sum())})
            if alpha != 0:
                for t in range(H):
                    rows["trajectory"].append({**prov, "dose": alpha, "coeff": c, "prompt": pid, "t": t + 1,
                                               "kl": float(kl[i, t]), "valid": int(valid[i, t])})
    pm = branch_pmass(lm, _enc(lm, "heldout_truefalse", n), vector, coeffs, T=H, forks=tuple(f for f in FORKS if f <= H))
    for k, (alpha, c) in enumerate(zip(doses, coeffs)):
        for i, pid in enumerate(tf_ids):
            for j, t in enumerate(pm.forks):
                rows["pmass"].append({**prov, "dose": alpha, "coeff": c, "prompt": pid, "fork_t": t,
                                      "pmass": float(pm.pmass[k, i, j]), "p_true": float(pm.p_true[k, i, j]),
                                      "censored": int(pm.censored[k, i, j])})
    words = prompts.sentiment_words()
    L = target_logit(lm, _enc(lm, "heldout_sentiment", n), vector, coeffs, words["positive"], words["negative"])
    for k, (alpha, c) in enumerate(zip(doses, coeffs)):
        for i, pid in enumerate(probe_ids):
            rows["target"].append({**prov, "dose": alpha, "coeff": c, "probe": pid, "L": float(L[k, i])})
    return rows, ro


def run_cell(lm: LM, vector, method: str, seed: int, window: int, cfg: SweepConfig, version: str) -> dict[str, list[dict]]:
    t0 = time.time()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    prov = {"model": lm.id, "method": method, "seed": seed, "window": window, "code_version": version, "time": now}
    res = calibrate_iso_kl(lm, vector, prompts.calibration_prompts(seed), T=window, progress=False)
    doses = tuple(float(d) for d in _split(cfg.doses))
    rows, ro = measure(lm, res.vector, tuple(d * res.c_star for d in doses), doses, cfg, prov)
    k1 = doses.index(1.0) if 1.0 in doses else 0
    sl = ro.rows(k1)
    holdout = kl_stats(ro.kl[sl][:, :window], ro.valid[sl][:, :window], res.c_star).p95  # first T tokens = the T-token rollout
    rows["history"] = [
        {**prov, "eval": e + 1, "c": h.c, "p95": h.p95, "complete": int(h.complete), "t": t + 1,
         "per_t_p95": h.per_t_p95[t], "per_t_max": h.per_t_max[t]}
        for e, h in enumerate(res.history) for t in range(len(h.per_t_p95))
    ]
    rows["calibration"] = [{
        **prov, "layers": " ".join(map(str, vector.layers)), "c_star": res.c_star, "converged": int(res.converged),
        "status": res.status, "calib_p95": res.p95, "holdout_p95": holdout, "evaluations": res.evaluations,
        "seconds": round(time.time() - t0, 1),
    }]
    return rows


def run_base(lm: LM, cfg: SweepConfig, version: str) -> dict[str, list[dict]]:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    prov = {"model": lm.id, "method": BASE, "seed": "", "window": "", "code_version": version, "time": now}
    rows, _ = measure(lm, None, (0.0,), (0.0,), cfg, prov)
    return rows


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_sweep(cfg: SweepConfig, stop_after: int | None = None, loader=load) -> Path:
    """Run every unfinished cell; `stop_after` (tests) stops after that many new cells, as a kill would."""
    out = Path(cfg.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    for stale in (out / "cells").glob("*.tmp"):  # a cell that was running when the sweep was killed
        shutil.rmtree(stale)
    version = code_version()
    grid = cfg.grid()
    todo = [g for g in grid if not (out / "cells" / cell_name(*g)).exists()]
    print(f"[isokl] sweep: {len(grid)} cells, {len(grid) - len(todo)} already done, writing {out}/", file=sys.stderr, flush=True)
    done_new, t_start = 0, time.time()
    for model_id in dict.fromkeys(g[0] for g in todo):
        lm = loader(model_id, device=cfg.device)
        if not (out / "cells" / cell_name(lm.id, BASE, "", "")).exists():
            t1 = time.time()
            _write_cell(out, cell_name(lm.id, BASE, "", ""), run_base(lm, cfg, version))
            print(f"[isokl] {lm.id}: base rollouts and scores ({time.time() - t1:.0f} s)", file=sys.stderr, flush=True)
        vectors: dict[tuple[str, int], object] = {}
        for _, method, seed, window in [g for g in todo if g[0] == model_id]:
            if (method, seed) not in vectors:
                vectors[(method, seed)] = extract(lm, prompts.extraction_pairs(seed), method)
            t1 = time.time()
            rows = run_cell(lm, vectors[(method, seed)], method, seed, window, cfg, version)
            _write_cell(out, cell_name(model_id, method, seed, window), rows)
            combine(out)
            done_new += 1
            cal = rows["calibration"][0]
            eta = (time.time() - t_start) / done_new * (len(todo) - done_new)
            print(
                f"[isokl] [{len(grid) - len(todo) + done_new}/{len(grid)}] {model_id} {method} seed {seed} T={window}: "
                f"c* = {cal['c_star']:.4g} ({cal['status']}, {cal['evaluations']} evals), calib p95 = {cal['calib_p95']:.3f}, "
                f"holdout p95 = {cal['holdout_p95']:.3f}  [{time.time() - t1:.0f} s; left ~{_fmt(eta)}]",
                file=sys.stderr, flush=True,
            )
            if stop_after is not None and done_new >= stop_after:
                return out
    combine(out)
    return out
