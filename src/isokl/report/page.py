"""Page: a study folder (or a judged grid folder) -> report.html, one self-contained file (no torch, no network).

Everything on the page comes from the folder's records, read by the same code as the other report
files: the verdicts are claims.md's, their tables `evidence`'s, Table 1 is table1.csv's rows, the
figures are the SVGs `figure` renders, the steered text is examples.csv (its token pieces, since
2026-12-03) coloured by that rollout's own rows of trajectory.csv. A folder whose examples have no
token pieces (v1, v2) shows the text uncoloured and says so: nothing is recomputed for the page.

The page's style and script (`assets/page.css`, `assets/page.js`) are inlined; its data is one JSON
block the script reads. No file, font or script is fetched from anywhere, so it opens from file://.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from ..study.records import BASE, TARGET, TOL, judge_rows, span
from .evidence import Cell, Evidence, Table
from .index import Study, key

KL_SCALE = 2.0  # nats: the token colours run from 0 to this (and stay darkest above); stated in the legend
NOT_RECORDED = "per-token KL not recorded"  # the token view of a folder whose examples have no token pieces


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(v: Any) -> str:
    """A table value as shown: floats to 3 significant digits (signed where a difference), '' for NaN or None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _clean(v: Any) -> Any:
    """JSON-safe: NaN -> None (JSON has no NaN)."""
    return None if isinstance(v, float) and math.isnan(v) else v


def table_html(t: Table, cls: str = "", tid: str = "") -> str:
    """A sortable table: every header is a button (the script sorts by the cell's data-v, a number or the text)."""
    head = "".join(f'<th scope="col" aria-sort="none"><button type="button">{esc(c)}</button></th>' for c in t.columns)
    body = []
    for row in t.rows:
        tds = []
        for v in row:
            sortv = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
            numeric = isinstance(v, int | float) and not isinstance(v, bool)
            tds.append(f'<td{" class=num" if numeric else ""} data-v="{esc(sortv)}">{esc(num(v))}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    ident = f' id="{esc(tid)}"' if tid else ""
    return (
        f'<div class="scroll"><table class="sortable {cls}"{ident}><caption>{esc(t.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def verdict_class(v: str) -> str:
    return {"PASS": "pass", "FAIL": "fail"}.get(v.split(" ")[0], "na")


def one_line(e: Evidence) -> str:
    return (f"{e.k}/{e.n} {e.unit} " if e.k is not None else "") + e.reason


def strip_html(ev: list[Evidence]) -> str:
    """The verdict strip (one link per requirement) and each requirement's evidence, opened by its anchor (#R3)."""
    items = "".join(
        f'<li><a class="verdict {verdict_class(e.verdict)}" href="#{esc(e.id)}" data-claim="{esc(e.id)}"><b>{esc(e.id)}</b> '
        f'<span class="v">{esc(e.verdict)}</span><span class="why">{esc(one_line(e))}</span></a></li>'
        for e in ev
    )
    blocks = "".join(
        f'<details id="{esc(e.id)}" class="claim"><summary><b>{esc(e.id)}: {esc(e.verdict)}</b> {esc(one_line(e))}</summary>'
        + "".join(table_html(t) for t in e.tables)
        + f'<p class="detail">claims.md: {esc(e.detail)}</p></details>'
        for e in ev
    )
    return f'<ol class="strip" id="verdict-strip">{items}</ol>{blocks}'


def inline_svg(svg: bytes, prefix: str) -> str:
    """A matplotlib SVG as an inline element: the XML prolog and doctype dropped, every id prefixed (two figures on
    one page must not share an id), the fixed size made responsive."""
    text = svg.decode()
    text = text[text.index("<svg") :]
    text = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 class="fig" role="img"', text, count=1)


def _pieces(r: dict) -> list[str] | None:
    tokens = r.get("tokens", "")
    return json.loads(tokens) if tokens else None


def token_rows(s: Study, fields: tuple[str, ...]) -> tuple[list[dict], list[dict], bool]:
    """The example continuations as the script shows them: the steered ones with each token's piece and KL (that
    rollout's trajectory rows, t = 1..), the base model's with its pieces; and whether any pieces were recorded."""
    steered, base, recorded = [], [], False
    for r in s.examples:
        pieces = _pieces(r)
        recorded |= pieces is not None
        k = key(r)
        sel = dict(zip(("model", "method", "seed", "window"), k, strict=True))
        if r["method"] == BASE:
            base.append({"sel": {"model": r["model"]}, "prompt": r["prompt"], "text": r["text"], "tokens": pieces})
            continue
        kl = None
        arr = s.kl(k, r["alpha"])
        if pieces is not None and arr is not None and r["prompt"] in s.kl_prompts[(k, r["alpha"])]:
            row = arr[s.kl_prompts[(k, r["alpha"])].index(r["prompt"])]
            kl = [_clean(float(row[t])) if t < len(row) else None for t in range(len(pieces))]
        steered.append(
            {
                "sel": {f: sel[f] for f in fields},
                "alpha": r["alpha"],
                "c": r["c"],
                "prompt": r["prompt"],
                "text": r["text"],
                "tokens": pieces,
                "kl": kl,
            }
        )
    rank = {m: i for i, m in enumerate(s.models)}  # the study's model order (examples.csv holds them as written)
    steered.sort(key=lambda r: rank.get(r["sel"].get("model"), len(rank)))
    return steered, base, recorded


def cell_rows(s: Study) -> list[dict]:
    """Every cell's calibration history (c and p95 per solver step) and provenance line."""
    steps: dict[tuple, dict[int, tuple]] = defaultdict(dict)
    for h in s.history:
        steps[key(h)][h["eval"]] = (h["eval"], _clean(h["c"]), _clean(h["p95"]), h["complete"])
    out = []
    for c in s.cal:
        k = key(c)
        lo, hi = c.get("c_star_lo", float("nan")), c.get("c_star_hi", float("nan"))
        interval = f" [{lo:.4g}, {hi:.4g}]" if not (math.isnan(lo) or math.isnan(hi)) else ""
        layers = span(int(x) for x in str(c.get("layers", "")).split()) if c.get("layers") else "?"
        line = (
            f"{c['model']} {c['method']} seed {c['seed']} T = {c['window']}: layers {layers}; c* = {c['c_star']:.4g}"
            f"{interval}; calibration p95 {c['calib_p95']:.3f} ({c['status']}, {c['evaluations']} evaluations, "
            f"{c['seconds']:.1f} s); code {c['code_version']}, {c['time']}"
        )
        out.append(
            {
                "sel": dict(zip(("model", "method", "seed", "window"), k, strict=True)),
                "line": line,
                "c_star": _clean(c["c_star"]),
                "history": [list(v) for _, v in sorted(steps.get(k, {}).items())],
            }
        )
    return out


def prompt_texts_of(rows: list[dict], texts: dict[str, str]) -> dict[str, str]:
    ids = list(dict.fromkeys(r["prompt"] for r in rows))
    return {pid: texts.get(pid, "") for pid in ids}


def assets() -> tuple[str, str]:
    base = resources.files("isokl.report") / "assets"
    return (base / "page.css").read_text(), (base / "page.js").read_text()


def _data_block(data: dict) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return '<script type="application/json" id="page-data">' + text.replace("</", "<\\/") + "</script>"


def page(title: str, nav: list[tuple[str, str]], sections: list[str], data: dict) -> str:
    css, js = assets()
    links = "".join(f'<a href="#{esc(a)}">{esc(b)}</a>' for a, b in nav)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{css}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><nav aria-label="sections">{links}</nav></header><main>'
        + "".join(sections)
        + f'</main><div id="tip" role="tooltip" hidden></div>{_data_block(data)}<script>{js}</script></body></html>\n'
    )


def token_section(recorded: bool, what: str) -> str:
    legend = (
        '<div class="legend" aria-label="colour scale"><span>per-token KL(steered || base), nats, fixed scale:</span>'
        '<span class="scale"><span class="bar"></span><span class="ticks"><span>0</span><span>0.5</span><span>1</span>'
        f"<span>1.5</span><span>&ge; {KL_SCALE:g}</span></span></span><span>tokens at or above 1 nat are also underlined; hover or focus a "
        "token for its value</span></div>"
        if recorded
        else f'<p class="note" id="not-recorded">{NOT_RECORDED}: this folder\'s examples.csv has no token pieces (written '
        "before 2026-12-03), so the text is shown uncoloured.</p>"
    )
    return (
        f'<section id="text"><h2>The steered text</h2><p>{esc(what)} Greedy continuations; the base model on the left, '
        f'the chosen dose(s) beside it.</p>{legend}<div id="selectors" class="selectors"></div><div id="tokens"></div>'
        '<div id="cell"><h3>Calibration of this cell</h3><p id="cell-line"></p><div id="history"></div></div></section>'
    )


def study_page(s: Study, rows: list[dict], ev: list[Evidence], figures: dict[str, bytes], protocol: str, prov: str, texts) -> str:
    """report.html of a study folder."""
    title = "isokl study report" + (f": concept {s.concept}" if s.concept else "")
    fields = ("model", "method", "seed", "window")
    steered, base, recorded = token_rows(s, fields)
    cols = tuple(rows[0]) if rows else ()
    t1 = Table(
        "Table 1 (table1.csv): one row per (model, method) and control; click a header to sort",
        cols,
        [tuple(r[c] for c in cols) for r in rows],
    )
    figs = "".join(
        f'<figure id="{name}">{inline_svg(svg, name)}<figcaption>{esc(cap)}</figcaption></figure>'
        for name, cap, svg in (
            ("figure1", "Figure 1 (figure1.svg)", figures.get("figure1")),
            ("figure2", "Figure 2 (figure2.svg)", figures.get("figure2")),
        )
        if svg
    )
    sections = [
        f'<section id="verdicts"><h2>Verdicts R1-R6</h2>{f"<p>{esc(protocol)}</p>" if protocol else ""}{strip_html(ev)}</section>',
        f'<section id="figures"><h2>Figures</h2>{figs}</section>',
        f'<section id="table1"><h2>Table 1</h2>{table_html(t1, "wide", "table1-table")}</section>',
        token_section(recorded, "The first held-out generic prompts of every cell (examples.csv), at every recorded dose."),
        f'<section id="provenance"><h2>Provenance</h2><p>{esc(prov)}</p><p>Built by <code>isokl report</code> from the '
        "folder's CSV files alone; the CSV and markdown files are the record.</p></section>",
    ]
    nav = [
        ("verdicts", "Verdicts"),
        ("figures", "Figures"),
        ("table1", "Table 1"),
        ("text", "Steered text"),
        ("provenance", "Provenance"),
    ]
    data = {
        "fields": list(fields),
        "base_fields": ["model"],
        "scale": KL_SCALE,
        "recorded": recorded,
        "band": [TARGET - TOL, TARGET + TOL],
        "prompts": prompt_texts_of(steered + base, texts),
        "steered": steered,
        "base": base,
        "cells": cell_rows(s),
    }
    return page(title, nav, sections, data)


def _value(v: str) -> Cell:
    """A grid.csv value for the sortable table: numbers as numbers, the rest as written."""
    try:
        return float(v) if v not in ("", "nan") else None
    except ValueError:
        return v


def grid_page(s: Study, settings: dict, title: str, grid_csv: str, svg: bytes, texts: dict[str, str]) -> str:
    """report.html of a judged grid folder: the leaderboard (grid.csv's rows), its effect-vs-damage plot (grid.svg) and
    every vector's held-out continuations coloured by per-token KL (the judge's rows, OUT/judge/)."""
    reader = csv.DictReader(io.StringIO(grid_csv))
    cols = tuple(reader.fieldnames or ())
    board = Table(
        "Leaderboard (grid.csv): ranked by concept score beyond the control at alpha 1; click a header to sort",
        cols,
        [tuple(_value(r[c]) for c in cols) for r in reader],
    )
    fields = ("method",)
    steered, base, recorded = token_rows(s, fields)
    n = settings.get("n_heldout", {})
    what = (
        f"The held-out continuations the judge recorded (it ran {n.get('heldout_generic', '?')} prompts, "
        f"{settings.get('horizon', '?')} tokens; grids judged since 2026-12-06 keep every one), for every vector and "
        "control at every judged dose, beside the base model's own."
    )
    sections = [
        f'<section id="leaderboard"><h2>Leaderboard</h2>{table_html(board, "wide", "leaderboard-table")}</section>',
        f'<section id="figures"><h2>Effect against damage</h2><figure id="grid">{inline_svg(svg, "grid")}'
        "<figcaption>grid.svg: concept score against excess NLL at alpha 1, 95% intervals, control bands</figcaption>"
        "</figure></section>",
        token_section(recorded, what),
        f'<section id="provenance"><h2>Provenance</h2><p>{esc(_grid_provenance(settings))}</p></section>',
    ]
    nav = [
        ("leaderboard", "Leaderboard"),
        ("figures", "Effect vs damage"),
        ("text", "Steered text"),
        ("provenance", "Provenance"),
    ]
    data = {
        "fields": list(fields),
        "labels": {"method": "vector"},
        "base_fields": [],  # one model per grid: every base row is that model's
        "scale": KL_SCALE,
        "recorded": recorded,
        "band": [TARGET - TOL, TARGET + TOL],
        "prompts": prompt_texts_of(steered + base, texts),
        "steered": steered,
        "base": base,
        "cells": cell_rows(s),
    }
    return page(title.lstrip("# "), nav, sections, data)


def ruler(settings: dict) -> str:
    """Where the concept score was read: the reference block and how it was chosen (older grids: each vector's layers)."""
    if "concept_block" not in settings:
        return "judged before 2026-12-06: each vector read at its own layers"
    return f"block {settings['concept_block']}, where held-out contrast pairs separate most consistently"


def _grid_provenance(st: dict) -> str:
    return (
        f"Judged on {st.get('model')} ({st.get('dtype', '?')}), concept {st.get('concept')} ({st.get('concept_source', '?')}), "
        f"seed {st.get('seed')}, T = {st.get('window')}, doses {', '.join(f'{a:g}' for a in st.get('alphas', []))} x c*; "
        f"code {st.get('code_version')}; judged in {st.get('seconds', 0):.1f} s. Concept score: {ruler(st)}. Built from "
        "OUT/judge/ and grid.csv."
    )


def grid_report(out: Path, title: str, table: str, svg: bytes) -> str:
    """report.html of a judged grid folder (`grid_page`), from the judge's rows in OUT/judge/ and the leaderboard's
    grid.csv text and grid.svg; the held-out prompts' texts from the concept's folder or the library."""
    from ..core.formats.concept import read_prompts
    from ..core.model.prompts import library_pool

    data, settings = judge_rows(out)
    texts: dict[str, str] = {}
    src = Path(str(settings.get("concept_source", "")))
    if settings.get("heldout_source") == "concept" and (src / "heldout.jsonl").is_file():
        texts = {p.id: p.user for p in read_prompts(src / "heldout.jsonl")[0]}
    elif settings.get("heldout_source") != "concept":
        texts = {p.id: p.user for p in library_pool("heldout_generic")}
    rows = {k: [{c: "" if v is None else str(v) for c, v in r.items()} for r in rs] for k, rs in data.items()}
    return grid_page(Study(rows), settings, title, table, svg, texts)
