"""Report: a sweep folder's CSV files -> Figure 1 and 2 (PNG, SVG), Table 1 (markdown, CSV), claims.md, examples.md
and report.html (`page`: all of them on one self-contained page).

Imports no torch: files are the only interface between compute and presentation, and
everything here is rebuilt from the CSVs alone (`isokl report DIR`): `records` reads and
checks them, `index` parses and indexes them once, `estimate` computes, `table`, `claims` and `figure` render.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.formats.concept import SETS, read_prompts
from ..core.model.files import write_all
from ..study.records import BASE, RecordsError, cell_settings, finished_cells, load
from . import estimate as est
from .claims import Claim, claims, claims_markdown, provenance, summary
from .evidence import evidence
from .figure import figure, figure2, pmass_points
from .index import Study, base_key, key
from .page import study_page
from .table import csv_text, table1, table1_markdown


@dataclass(frozen=True)
class Built:
    """What `build` wrote, and the verdicts it wrote into claims.md."""

    paths: list[Path]
    claims: list[Claim]


def build(d: str | Path, expected_cells: int | None = None) -> Built:
    """Check the CSVs, render table, claims and figure in memory, then write them all (each through a
    temporary file and a rename): a bad input changes no report file."""
    d = Path(d)
    s = Study(load(d))
    rows = table1(s)
    if not rows:
        raise RecordsError(f"{d}/calibration.csv has no cell that Table 1 can use")
    cl = claims(s, rows, expected_cells)
    points = pmass_points(s)  # two-stage bootstraps per point: computed once, drawn and written
    fig, fig2 = figure(s, points), figure2(s)
    proto = protocol(s, d)
    files = {
        "table1.md": table1_markdown(rows, table_title(s, proto)).encode(),
        "table1.csv": csv_text(rows).encode(),
        "claims.md": claims_markdown(cl, s, expected_cells, proto).encode(),
        "figure1.png": fig["png"],
        "figure1.svg": fig["svg"],
    }
    if fig2:
        files |= {"figure2.png": fig2["png"], "figure2.svg": fig2["svg"]}
    if points:
        files["figure1_pmass.csv"] = csv_text(points).encode()
    ex = examples_markdown(s, d)
    if ex:
        files["examples.md"] = ex.encode()
    svgs = {"figure1": fig["svg"]} | ({"figure2": fig2["svg"]} if fig2 else {})
    ev = evidence(s, rows, cl)
    files["report.html"] = study_page(s, rows, ev, svgs, proto, provenance(s), prompt_texts(s, d)).encode()
    return Built(write_all(d, files), cl)


EXAMPLE_ALPHAS = (0.0, 1.0, 2.0)


def protocol(s: Study, d: Path) -> str:
    """The sizes a concept study ran with, from its cells' settings.json ("" for folders written before concepts,
    whose protocol is in docs/decisions.md): so a quick protocol is never mistaken for the full one."""
    if not s.concept:
        return ""
    recorded = [st for c in finished_cells(d) if (st := cell_settings(c)) and c.name.split("__")[1] != BASE]
    if not recorded:
        return ""
    st = recorded[0]
    n = st["n_heldout"] if isinstance(st["n_heldout"], dict) else dict.fromkeys(SETS, st["n_heldout"])
    doses = sorted({a for r in recorded for a in r.get("alphas", []) + r.get("dose_alphas", [])})
    probes = f"{n['heldout_sentiment']} probes" if n.get("heldout_sentiment") else "no probes (target axis not measured)"
    return (
        f"Protocol (from the cells' settings.json): concept {s.concept}; models {', '.join(s.models)}; seeds {s.seeds}, "
        f"{st.get('n_calibration', 4)} calibration prompts and 4 contrast pairs per seed; windows T = {s.windows}; "
        f"held-out: {n['heldout_generic']} prompts, {n['heldout_truefalse']} true/false questions, {probes}; rollouts of "
        f"{st['horizon']} tokens, forks {st['forks'][0]}..{st['forks'][-1]}; doses {', '.join(f'{a:g}' for a in doses)} x c*."
    )


def table_title(s: Study, proto: str) -> str:
    """Table 1's heading for a concept study ("" for folders written before concepts: v1 and v2 stay as they were)."""
    return f"# Table 1: concept {s.concept}\n\n" + (f"{proto}\n\n" if proto else "") if s.concept else ""


def prompt_texts(s: Study, d: Path) -> dict[str, str]:
    """Held-out prompt id -> its text: a user concept's copy in the folder (`sweep.snapshot_concept`), else the
    library's generic pool (the built-in concepts' held-out prompts)."""
    snap = d / "concept" / "heldout.jsonl"
    if snap.is_file():
        return {p.id: p.user for p in read_prompts(snap)[0]}
    from ..core.model.prompts import library_pool

    return {p.id: p.user for p in library_pool("heldout_generic")}


def examples_markdown(s: Study, d: Path) -> str | None:
    """The decoded continuations of the example prompts (the first 3 held-out generic prompts: a fixed rule) for
    every model and method at alpha 0, 1 and 2, seed 0, cells of the largest window; None without examples rows."""
    rows = s.examples
    if not rows or not s.windows:
        return None
    texts = prompt_texts(s, d)  # in pool order
    big, seed = max(s.windows), min(s.seeds)
    got = {(*key(r), r["alpha"], r["prompt"]): r["text"] for r in rows}
    shown = {r["prompt"] for r in rows}
    ids = [pid for pid in texts if pid in shown]
    out = [
        "# Example continuations",
        "",
        f"The first {len(ids)} held-out {'' if s.concept else 'generic '}prompts (a rule fixed before the run), greedy, {s.horizon} tokens; seed {seed}, "
        f"cells calibrated at T = {big}; alpha 0 is the base model. p95 KL: that continuation's p95 per-token "
        "KL(steered || base). Built by `isokl report` from examples.csv and trajectory.csv.gz.",
    ]
    for m in s.models:
        out += ["", f"## {m}"]
        for pid in ids:
            out += [
                "",
                f"### {pid}: {texts.get(pid, '')}",
                "",
                f"**alpha 0 (base):** {_quote(got.get((*base_key(m), 0.0, pid)))}",
            ]
            for meth in s.methods + s.controls:
                for a in EXAMPLE_ALPHAS[1:]:
                    text = got.get((m, meth, seed, big, a, pid))
                    if text is None:
                        continue
                    p95 = est.prompt_p95(s, (m, meth, seed, big), a, pid)
                    out += ["", f"**{meth}, alpha {a:g}** (p95 KL {p95:.2f}): {_quote(text)}"]
    return "\n".join(out) + "\n"


def _quote(text: str | None) -> str:
    if text is None:
        return "(not computed)"
    return " ".join(text.split()) or "(empty: the first token ended the turn)"


def rebuild_grid(d: Path) -> list[Path]:
    """A judged grid folder's tables, figure and report.html rebuilt from OUT/judge/ (its title and vector files read
    back from grid.md and grid.csv)."""
    import csv

    from . import grid, ranking

    b = ranking.load(d)
    md, table = d / "grid.md", d / "grid.csv"
    title = md.read_text().splitlines()[0] if md.is_file() else f"# Judged grid: {b.settings.get('model')}"
    files = {}
    if table.is_file():
        with table.open(newline="") as f:
            own = f"{b.budget:g}"  # another budget's rows name its files in OUT/budget-B/
            files = {r["name"]: r["file"] for r in csv.DictReader(f) if r.get("file") and r.get("budget", own) == own}
    return grid.write_grid(d, b, title, files)


def is_grid(d: Path) -> bool:
    """A folder `isokl calibrate` judged (OUT/judge/), not a study's."""
    return (d / "judge" / "settings.json").is_file() and not (d / "calibration.csv").exists()


def run(d: str | Path, expected_cells: int | None = None) -> int:
    """`isokl report DIR`: build, then print the verdicts in short and the files written (the CLI parses the flags).
    A judged grid folder gets its leaderboard files and report.html rebuilt."""
    d = Path(d)
    try:
        if is_grid(d):
            for p in rebuild_grid(d):
                print(p)
            return 0
        built = build(d, expected_cells)
    except RecordsError as e:
        print(f"isokl report: error: {e}", file=sys.stderr)
        return 1
    for line in summary(built.claims):
        print(line)
    for p in built.paths:
        print(p)
    return 0
