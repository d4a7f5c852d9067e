"""Rename the CSV columns of a sweep folder written before 2026-11-29 to today's vocabulary (once; issue 11).

    .venv/bin/python scripts/rename_columns.py results

alpha = c / c* (was `dose`), c = the coefficient (was `coeff`), target_logit = the
target-axis logit (was `L`, target.csv); settings.json key `doses` -> `alphas`. Only the
header line of each CSV changes; data rows are left byte for byte. Files already
renamed are left alone.
"""

import json
import sys
from pathlib import Path

RENAME = {"dose": "alpha", "coeff": "c", "L": "target_logit"}


def rename_csv(path: Path) -> bool:
    data = path.read_bytes()  # bytes: the csv module's \r\n line ends stay as they are
    header, nl, body = data.partition(b"\r\n")
    cols = header.decode().split(",")
    new = [RENAME.get(c, c) for c in cols]
    if new == cols:
        return False
    path.write_bytes(",".join(new).encode() + nl + body)
    return True


def main(d: str) -> None:
    root = Path(d)
    changed = sum(
        rename_csv(p) for p in sorted(root.glob("*.csv")) + sorted(root.glob("cells/*/*.csv")) if not p.name.startswith("table1")
    )
    for p in sorted(root.glob("cells/*/settings.json")):
        s = json.loads(p.read_text())
        if "doses" in s:
            s["alphas"] = s.pop("doses")
            p.write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
            changed += 1
    print(f"renamed columns in {changed} files under {root}/")


if __name__ == "__main__":
    main(sys.argv[1])
