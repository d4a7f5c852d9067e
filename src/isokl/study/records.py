"""Records: the study's files, their schema and constants -> read and written in one place (no torch).

`sweep` writes every cell through `write_cell` / `combine`, `report` reads through `load`,
which checks every file against `FILES` and names the file, line and column of a problem.
A cell folder holds one CSV per file plus `settings.json`: every setting that changes its
rows, compared on resume (`settings_diff`), so a resumed sweep never mixes settings.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core.model.files import folder, is_temporary, write_bytes
from ..core.stats.statistic import P95, TARGET, TOL  # the calibration target, owned by the statistic

__all__ = ["TARGET", "TOL"]  # re-exported with the study constants

# The study of the spec (DESIGN.md s.1-4): the default grid and the calibration target.
STUDY_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")
STUDY_METHODS = ("mean_diff", "pca", "directional_ablation")
STUDY_SEEDS = (0, 1, 2)
STUDY_WINDOWS = (20, 50)
BASE = "base"  # method name of the alpha = 0 rows (computed once per model; seed and window empty)

# column -> type: s text, i integer, f float, b 0/1. Provenance columns open every file.
PROVENANCE = {"model": "s", "concept": "s", "method": "s", "seed": "i", "window": "i", "code_version": "s", "time": "s"}
FILES: dict[str, dict[str, str]] = {
    "calibration": {
        "layers": "s",
        "c_star": "f",
        "c_star_lo": "f",
        "c_star_hi": "f",
        "converged": "b",
        "status": "s",
        "calib_p95": "f",
        "holdout_p95": "f",
        "holdout_p95_t20": "f",
        "holdout_p95_t20_lo": "f",
        "holdout_p95_t20_hi": "f",
        "holdout_p95_t50": "f",
        "holdout_p95_t50_lo": "f",
        "holdout_p95_t50_hi": "f",
        "evaluations": "i",
        "seconds": "f",
    },
    "history": {"eval": "i", "c": "f", "p95": "f", "complete": "b", "t": "i", "per_t_p95": "f", "per_t_max": "f"},
    "trajectory": {"alpha": "f", "c": "f", "prompt": "s", "t": "i", "kl": "f", "valid": "b"},
    "nll": {"alpha": "f", "c": "f", "prompt": "s", "nll_sum": "f", "n_tokens": "i", "distinct3": "f"},
    "pmass": {"alpha": "f", "c": "f", "prompt": "s", "fork_t": "i", "pmass": "f", "p_true": "f", "censored": "b"},
    "target": {"alpha": "f", "c": "f", "probe": "s", "target_logit": "f"},
    "examples": {"alpha": "f", "c": "f", "prompt": "s", "text": "s", "tokens": "s"},
}
# The judge's own file (`study.judge`; docs/decisions.md, "The judge"): not a sweep file, so a sweep folder never has it.
JUDGE_FILES: dict[str, dict[str, str]] = {
    "concept_score": {"alpha": "f", "c": "f", "prompt": "s", "steered": "f", "base": "f", "score": "f"},
    # a user's scorers (`isokl.judge(..., scorers=)`, `--scorer`): each text -> float, steered and base, per prompt
    "scorer_score": {"alpha": "f", "c": "f", "prompt": "s", "scorer": "s", "steered": "f", "base": "f", "score": "f"},
    # the behavioural reading (a concept with a question): the answers' log-odds, steered and base reply, per prompt
    "question_score": {"alpha": "f", "c": "f", "prompt": "s", "steered": "f", "base": "f", "score": "f"},
}
SCHEMAS = {**FILES, **JUDGE_FILES}
JUDGE_DIR = "judge"  # OUT/judge/: the judge's rows, the files the leaderboard and the grid's report.html are built from
HOLDOUT_WINDOWS = (20, 50)  # held-out p95 over the first 20 and all 50 tokens of every cell, same rollouts (v2)
HOLDOUT_LEVEL = 0.90  # their prompt-bootstrap intervals
HOLDOUT_COLUMNS = tuple(f"holdout_p95_t{w}{s}" for w in HOLDOUT_WINDOWS for s in ("", "_lo", "_hi"))
COMPRESSED = {"trajectory"}  # written as NAME.csv.gz (gzip, no timestamp): the one file that grows to tens of MB
OPTIONAL_EMPTY = {"seed", "window"}  # empty on the base rows
ADDED = {  # columns added after a study ran: empty in older folders (not computed). `concept` (2026-12-01): empty
    # in v1/v2, whose rows are all of the built-in sentiment concept
    name: {"concept"}
    | ({"c_star_lo", "c_star_hi", *HOLDOUT_COLUMNS} if name == "calibration" else set())
    | ({"distinct3"} if name == "nll" else set())  # 2026-12-01 too; also empty where a rollout has < 3 tokens
    | ({"tokens"} if name == "examples" else set())  # 2026-12-03: each token's text (JSON list); the report's KL view
    for name in FILES
}
SETTINGS = "settings.json"
RECORDED_ONLY = {"code_version", "source_hash"}
# settings a cell records since concepts (2026-12-01): a settings.json written before them was this (Study v1/v2)
LEGACY_SETTINGS = {
    "concept": "sentiment",
    "n_calibration": 4,
}  # in settings.json, reported on resume, not refused (docs/decisions.md)


def span(layers) -> str:
    """Layer indices -> how tables and messages name them: (3, 4, 5, 9) -> '3..5, 9' (the `layers` column holds them
    space-separated, '3 4 5 9')."""
    runs: list[list[int]] = []
    for x in layers:
        if runs and x == runs[-1][-1] + 1:
            runs[-1].append(x)
        else:
            runs.append([x])
    return ", ".join(f"{r[0]}..{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def holdout_columns(kl: np.ndarray) -> dict[str, float]:
    """kl: [prompt t] held-out KL at 1x, NaN where not scored -> the calibration columns of every held-out window
    it covers: the pooled p95 over the first w tokens and its prompt-bootstrap interval (`P95.prompt_interval`)."""
    out: dict[str, float] = {}
    for w in HOLDOUT_WINDOWS:
        if kl.shape[1] >= w:
            first = kl[:, :w]
            lo, hi = P95.prompt_interval(first, level=HOLDOUT_LEVEL)
            out |= {
                f"holdout_p95_t{w}": P95.pooled(first[~np.isnan(first)]),
                f"holdout_p95_t{w}_lo": lo,
                f"holdout_p95_t{w}_hi": hi,
            }
    return out


class RecordsError(ValueError):
    """A results file that cannot be used as it is; the message names the file and what to do."""


def columns(name: str) -> list[str]:
    return list(PROVENANCE) + list(SCHEMAS[name])


def typed(name: str, rows: list[dict]) -> list[dict]:
    """Rows of file `name`, as read (text) or as computed (values) -> the same rows with typed values, so the report
    reads one form either way: f -> float (NaN where empty or None: not computed), i -> int (None where empty: the base
    rows' seed and window), b -> bool, s -> str. Columns outside the schema stay as they are."""
    types = {**PROVENANCE, **SCHEMAS[name]}
    conv: dict[str, Callable[[Any], Any]] = {
        "f": lambda v: float("nan") if v is None or v == "" else float(v),
        "i": lambda v: None if v is None or v == "" else int(v),
        "b": lambda v: v == "1" if isinstance(v, str) else bool(v),
        "s": lambda v: "" if v is None else str(v),
    }
    return [{k: conv[types[k]](v) if k in types else v for k, v in r.items()} for r in rows]


def _parse(kind: str, v: str) -> None:
    if kind == "i":
        int(v)
    elif kind == "f":
        float(v)
    elif kind == "b" and v not in ("0", "1"):
        raise ValueError(v)


def path(d: Path, name: str) -> Path:
    """The file of `name` in folder d: whichever of NAME.csv.gz and NAME.csv exists (a finished folder may have
    been compressed after its run), else the name a new file gets (.csv.gz for `COMPRESSED` files)."""
    d = Path(d)
    for p in (d / f"{name}.csv.gz", d / f"{name}.csv"):
        if p.exists():
            return p
    return d / f"{name}.csv{'.gz' if name in COMPRESSED else ''}"


def _open_text(p: Path):
    return gzip.open(p, "rt", newline="") if p.name.endswith(".gz") else p.open(newline="")


def _csv_text(fieldnames: list[str], rows) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fieldnames)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write_rows(p: Path, fieldnames: list[str], rows, gz: bool) -> None:
    """A CSV file in one write; gz: gzip without a timestamp, so the same rows give the same bytes."""
    data = _csv_text(fieldnames, rows).encode()
    p.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def read(path: Path, name: str) -> list[dict]:
    """Rows of a file (OUT/<name>.csv or .csv.gz), checked against the schema; [] when the file does not exist."""
    if not path.exists():
        return []
    types = {**PROVENANCE, **SCHEMAS[name]}
    try:
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames
            raw = list(reader)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path}: cannot be read ({e}); restore it or rerun the sweep into a fresh folder") from None
    missing = [c for c in types if c not in (fields or []) and c not in ADDED.get(name, set())]
    if missing:
        raise RecordsError(
            f"{path}: missing column(s) {', '.join(missing)}; it was not written by this isokl (expected {', '.join(types)})"
        )
    rows = [{**dict.fromkeys(ADDED.get(name, ()), ""), **r} for r in raw]
    for i, r in enumerate(rows, start=2):  # line 1 is the header
        if None in r or any(v is None for v in r.values()):
            raise RecordsError(
                f"{path} line {i}: {'too many' if None in r else 'too few'} fields (a truncated or "
                f"edited file); restore it or rerun the sweep into a fresh folder"
            )
        for col, kind in types.items():
            v = r[col]
            if v == "" and (col in OPTIONAL_EMPTY or kind == "s" or col in ADDED.get(name, ())):
                continue
            try:
                _parse(kind, v)
            except ValueError:
                raise RecordsError(
                    f"{path} line {i}: column {col!r} = {v!r} is not {'a number' if kind in 'if' else '0 or 1'}; "
                    "restore the file or rerun the sweep"
                ) from None
    return rows


def load(d: Path) -> dict[str, list[dict]]:
    """Every file of a sweep folder, checked; calibration.csv must have rows."""
    d = Path(d)
    if not d.is_dir():
        raise RecordsError(f"{d} is not a folder: give the folder a sweep wrote (e.g. results)")
    data = {name: read(path(d, name), name) for name in FILES}
    if not data["calibration"]:
        raise RecordsError(f"{d}/calibration.csv is missing or empty: run `isokl sweep --out {d}` first")
    return data


def cell_name(model: str, method: str, seed, window) -> str:
    """The cell's folder name; a model given as a path (/data/my-model) becomes one safe name (_data_my-model)."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in model)
    return f"{safe}__{method}__s{seed}__T{window}"


HOOK_ENV = "ISOKL_CELL_HOOK"  # "module:function" called with each cell's name before the cell is written (`cell_hook`)


def cell_hook(name: str) -> None:
    """$ISOKL_CELL_HOOK = "module:function": called with each cell's name after the cell ran and before it is written,
    by the local sweep and by every Ray worker (the tests' plugin `tests/ray_pause.py` pauses there, so a test can
    interrupt a sweep or kill a worker at a cell it chooses, not at a moment it guesses). Unset, it costs one
    environment lookup."""
    spec = os.environ.get(HOOK_ENV)
    if spec:
        import importlib

        module, _, fn = spec.partition(":")
        getattr(importlib.import_module(module), fn)(name)


def write_cell(out: Path, name: str, rows: dict[str, list[dict]], settings: dict) -> None:
    """All files of one cell, atomically: written into a temporary folder of a name no other writer uses (.NAME.tmp-
    PID-RANDOM: two workers may write the same cell when one is retried), then renamed to NAME."""
    with folder(out / "cells" / name, keep_other=True) as tmp:  # another writer finished it first: keep its copy
        for fname, rs in rows.items():
            _write_rows(path(tmp, fname), columns(fname), rs, fname in COMPRESSED)
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


def remove_stale(out: Path) -> None:
    """Remove half-written cells (their writer was killed); call only when no writer is running."""
    d = out / "cells"
    for p in d.iterdir() if d.is_dir() else ():
        if p.is_dir() and is_temporary(p):
            shutil.rmtree(p)


def finished_cells(out: Path) -> list[Path]:
    d = out / "cells"
    return sorted(p for p in d.iterdir() if p.is_dir() and not is_temporary(p)) if d.is_dir() else []


def combine(out: Path) -> None:
    """Rebuild OUT/<file>.csv (.csv.gz) from every finished cell, in sorted cell order (deterministic). A column added
    after a study ran (`ADDED`) is written when some cell has it (empty for the cells that predate it). A file whose
    rows are already these (in either form, e.g. compressed after the run) is left as it is."""
    cells = finished_cells(out)
    for fname in FILES:
        rows: list[dict] = []
        have: set[str] = set()
        for c in cells:
            if (src := path(c, fname)).exists():
                with _open_text(src) as r:
                    reader = csv.DictReader(r)
                    have |= set(reader.fieldnames or ())
                    rows += list(reader)
        cols = [k for k in columns(fname) if k not in ADDED.get(fname, ()) or k in have]
        text = _csv_text(cols, [{k: row.get(k, "") for k in cols} for row in rows])
        current = path(out, fname)
        if current.exists():
            with _open_text(current) as f:
                if f.read() == text:
                    continue
        final = out / f"{fname}.csv{'.gz' if fname in COMPRESSED else ''}"
        write_bytes(final, gzip.compress(text.encode(), mtime=0) if fname in COMPRESSED else text.encode())
        other = out / (f"{fname}.csv" if final.name.endswith(".gz") else f"{fname}.csv.gz")
        other.unlink(missing_ok=True)  # the file in its other form is stale now


def cell_settings(cell: Path) -> dict | None:
    p = cell / SETTINGS
    return json.loads(p.read_text()) if p.exists() else None


def settings_diff(recorded: dict | None, now: dict) -> list[str]:
    """What differs between a cell's recorded settings and this run's (RECORDED_ONLY keys aside)."""
    if recorded is None:
        return ["no settings recorded (the cell was written by an older isokl)"]
    recorded = {**LEGACY_SETTINGS, **recorded}
    keys = sorted((set(recorded) | set(now)) - RECORDED_ONLY)
    return [
        f"{k}: {recorded.get(k, '(none)')!r} recorded, {now.get(k, '(none)')!r} now"
        for k in keys
        if recorded.get(k) != now.get(k)
    ]


def source_hash() -> str:
    """Hash of the installed package's source and data files: changes exactly when the code does."""
    root = Path(__file__).parents[1]  # the package, every layer
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".jsonl", ".json"):
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def code_version() -> str:
    """`VERSION+GITSHA` (`-dirty` when the package's own files differ from that commit), else `VERSION`."""
    here = Path(__file__).parents[1]  # the package, every layer
    try:
        git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, timeout=5, cwd=here).stdout.strip()
        sha = git("rev-parse", "--short", "HEAD")
        dirty = sha and git("status", "--porcelain", "--", ".")  # only src/isokl: results being written do not count
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'-dirty' if dirty else ''}" if sha else __version__


def judge_rows(out: Path) -> tuple[dict[str, list[dict]], dict]:
    """A judged grid folder's rows (OUT/judge/, as its files hold them, checked) and the judge's settings."""
    d = Path(out) / JUDGE_DIR
    if not (d / SETTINGS).is_file():
        raise RecordsError(f"{out}: no {JUDGE_DIR}/ folder (run `isokl calibrate ... --out {out}` without --no-judge)")
    return {name: read(path(d, name), name) for name in SCHEMAS}, json.loads((d / SETTINGS).read_text())
