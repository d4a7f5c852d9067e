"""Report: a sweep folder's CSV files -> Figure 1 (PNG, SVG), Table 1 (markdown, CSV) and claims.md.

Imports no torch: files are the only interface between compute and presentation, and
everything here is rebuilt from the CSVs alone (`isokl report DIR`): `records` reads and
checks them, `aggregate` computes, `table`, `claims` and `figure` render.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .aggregate import Study
from .claims import claims, claims_markdown, summary
from .figure import figure
from .records import RecordsError, load
from .table import csv_text, table1, table1_markdown


def build(d: str | Path, expected_cells: int | None = None) -> list[Path]:
    """Check the CSVs, render table, claims and figure in memory, then write them all (each through a
    temporary file and a rename): a bad input changes no report file."""
    d = Path(d)
    s = Study(load(d))
    rows = table1(s)
    if not rows:
        raise RecordsError(f"{d}/calibration.csv has no cell that Table 1 can use")
    cl = claims(s, rows, expected_cells)
    fig = figure(s)
    files = {
        "table1.md": table1_markdown(rows).encode(),
        "table1.csv": csv_text(rows).encode(),
        "claims.md": claims_markdown(cl, s, expected_cells).encode(),
        "figure1.png": fig["png"],
        "figure1.svg": fig["svg"],
    }
    tmps = []
    try:
        for name, data in files.items():
            tmp = d / f".{name}.tmp"
            tmp.write_bytes(data)
            tmps.append((tmp, d / name))
        for tmp, final in tmps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
    return [d / name for name in files]


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="isokl report", description="Rebuild Figure 1, Table 1 and claims.md from a sweep's CSVs (no torch)."
    )
    ap.add_argument("dir", help="folder written by `isokl sweep` or `isokl study` (e.g. results)")
    ap.add_argument("--expected-cells", type=int, default=None, help="mark the report INCOMPLETE when fewer cells are present")
    a = ap.parse_args(argv)
    try:
        paths = build(a.dir, a.expected_cells)
    except RecordsError as e:
        print(f"isokl report: error: {e}", file=sys.stderr)
        return 1
    for line in summary(a.dir):
        print(line)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
