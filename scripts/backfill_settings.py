"""Write settings.json into sweep cells made before isokl recorded settings (once, for results/ of 2026-11-28).

    .venv/bin/python scripts/backfill_settings.py results

Reads today's column names (run scripts/rename_columns.py first on older folders). What
a cell's rows show is read from them: held-out prompts per set, horizon, alphas, fork
points, the measured files (the alphas of a base cell come from the other cells of the
folder, whose run it belongs to). What rows cannot show (prompt pools, sentiment words, pmass suffix, target,
tolerance, dtype) is taken from the current code only after git confirms that the files
defining them are unchanged between each cell's recorded code version and HEAD; otherwise
the script stops and writes nothing. The source hash is marked unrecorded.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

from isokl.study.config import SweepConfig
from isokl.study.records import SETTINGS, finished_cells
from isokl.study.sweep import settings

DEFINING = ["src/isokl/data", "src/isokl/metrics.py"]  # pools, words; SUFFIX and FORKS
DEFAULTS = {"target: float = 1.0", "tol: float = 0.05", "dtype: torch.dtype = torch.float32"}


def rows(cell: Path, name: str) -> list[dict]:
    with (cell / f"{name}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def verify(sha: str) -> None:
    for path in DEFINING:
        diff = subprocess.run(
            ["git", "diff", "--stat", sha, "HEAD", "--", path], capture_output=True, text=True, check=True
        ).stdout
        if path.endswith("data") and diff.strip():
            sys.exit(f"{path} changed since {sha}: the prompt pools of those cells are not today's; not backfilling")
        if path.endswith("metrics.py"):
            old = subprocess.run(["git", "show", f"{sha}:{path}"], capture_output=True, text=True, check=True).stdout
            for const in ("FORKS = tuple(range(0, 51, 5))", "SUFFIX = '\\nAnswer (true/false): {\"value\":'"):
                if const not in old:
                    sys.exit(f"{path} at {sha} lacks {const!r}: not backfilling")
    src = "".join(
        subprocess.run(["git", "show", f"{sha}:src/isokl/{f}"], capture_output=True, text=True, check=True).stdout
        for f in ("calibrate.py", "models.py")
    )
    missing = [d for d in DEFAULTS if d not in src]
    if missing:
        sys.exit(f"the defaults {missing} are not in {sha}'s calibrate.py/models.py: not backfilling")


def main(d: str) -> None:
    out = Path(d)
    cells = [c for c in finished_cells(out) if not (c / SETTINGS).exists()]
    runs = [c for c in cells if "__base__" not in c.name]
    alphas = sorted({float(r["alpha"]) for c in runs for r in rows(c, "trajectory")})
    todo = {}
    for c in cells:
        version = rows(c, "nll")[0]["code_version"]
        verify(version.split("+")[1].removesuffix("-dirty"))
        n = len({r["prompt"] for r in rows(c, "nll")})
        forks = sorted({int(r["fork_t"]) for r in rows(c, "pmass")})
        cfg = SweepConfig(n_heldout=n, horizon=max(forks), alphas=",".join(map(str, alphas)))
        s = settings(cfg)
        s.update(code_version=version, source_hash="unrecorded (backfilled by scripts/backfill_settings.py)")
        assert s["forks"] == forks, (c.name, forks)
        measured = sorted(p.stem for p in c.glob("*.csv") if p.stem not in ("calibration", "history"))
        assert set(measured) <= set(s["measures"]) and (c not in runs or measured == s["measures"]), (c.name, measured)
        if c in runs:  # the trajectory's length is the horizon
            assert max(int(r["t"]) for r in rows(c, "trajectory")) == cfg.horizon, c.name
        todo[c] = s
    for c, s in todo.items():
        (c / SETTINGS).write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SETTINGS} into {len(todo)} cells of {out}/ (alphas {alphas})")


if __name__ == "__main__":
    main(sys.argv[1])
