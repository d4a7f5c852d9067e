"""Grid files: a ranked `leaderboard.Board` -> grid.md, grid.csv, grid.svg / grid.png (effect against damage) and
report.html; a grid calibrated without the judge -> its calibration table (numpy, matplotlib; no torch)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..core.model.files import write_all
from .leaderboard import NAN, Board, _span, csv_text, markdown
from .page import grid_report

# ---- figure ---------------------------------------------------------------------------------------------------------


YLABEL = {
    "concept": "concept score (units of the pairs' separation)",
    "question": "the question's log-odds, steered minus base reply",
    "delta_logit": "delta logit (probes), minus the base model's",
}
LABEL_GAP = 0.04  # axes fraction between two label centres: a 7-pt line is 0.023 of the 5.2-inch figure's axes


def dodge(at: list[float], gap: float) -> list[float]:
    """Label positions (axes fractions, ascending) moved apart to at least `gap`, as little as possible: pushed up from
    the lowest, then the whole run pulled back below 1 if it overflows (order kept)."""
    out: list[float] = []
    for f in at:
        out.append(max(f, out[-1] + gap) if out else f)
    over = out[-1] - (1 - gap / 2) if out else 0.0
    if over > 0:
        out = [f - over for f in out]
        for i in range(len(out) - 2, -1, -1):  # the pull-back may not close a gap below
            out[i] = min(out[i], out[i + 1] - gap)
    return out


def figure(b: Board, title: str) -> dict[str, bytes]:
    """`draw`, rendered: {"svg": ..., "png": ...}."""
    from .figure import _render

    return _render(draw(b, title))


def draw(b: Board, title: str):
    """Effect (the board's ranking reading against the base text) against damage (excess NLL) at alpha 1: one point
    per vector with its 95% intervals, marked with its place; each layer set's control drawn as a grey band (its
    interval of the same reading)."""
    from .figure import OKABE_ITO, _setup, color

    _setup()
    import matplotlib.pyplot as plt

    alpha = min(b.settings["alphas"], key=lambda a: abs(a - 1.0))
    pts = b.at(alpha)
    methods = sorted({e.method for e in pts})
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9.0, 5.2))
    by = b.rank_by

    def y_of(e):
        r = e.own(by)
        return NAN if r is None else r

    controls = sorted((p for p in pts if p.is_control), key=lambda e: y_of(e).mean)
    for e in controls:
        ax.axhspan(y_of(e).lo, y_of(e).hi, color=OKABE_ITO["random_direction"], alpha=0.15, lw=0)
        ax.axhline(y_of(e).mean, color=OKABE_ITO["random_direction"], lw=0.8, ls=":")
    ranked = b.ranked()
    handles = []
    for e in sorted((p for p in pts if not p.is_control), key=lambda e: ranked.index(e.name)):
        x, y = e.excess_nll, y_of(e)
        ax.errorbar(
            x.mean,
            y.mean,
            xerr=[[x.mean - x.lo], [x.hi - x.mean]],
            yerr=[[y.mean - y.lo], [y.hi - y.mean]],
            fmt="o" if e.converged else "x",
            color=color(e.method, methods),
            capsize=2,
            lw=1,
        )
        # the point carries its rank; the legend names it (names beside close points overprinted each other)
        rank = b.places[e.name].label
        ax.annotate(rank, (x.mean, y.mean), textcoords="offset points", xytext=(3, 3), fontsize=7, weight="bold")
        label = f"{rank}  {e.method} {_span(e.layers)}" + ("" if e.converged else f" ({e.status})")
        handles.append(Line2D([], [], color=color(e.method, methods), marker="o" if e.converged else "x", ls="", label=label))
    if b.others:  # the frontier: each vector's reading against its damage at every budget, joined in budget order
        _frontier(ax, b, alpha, y_of, lambda e: color(e.method, methods))
        handles.append(Line2D([], [], color="grey", lw=0.8, marker=".", label="line: the same vector at each budget (nats)"))
    if any(not e.converged for e in pts):
        handles.append(Line2D([], [], color="black", marker="x", ls="", label="x: did not converge (at its last c)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="rank",
              title_fontsize=7)  # fmt: skip
    ax.axvline(0, color="black", lw=0.5)
    # control labels at the right edge, moved apart where their bands lie close (a thin line points to each band)
    y0, y1 = ax.get_ylim()
    at = dodge([(y_of(e).mean - y0) / (y1 - y0) for e in controls], LABEL_GAP)
    for e, f in zip(controls, at, strict=True):
        ax.annotate(f"control {_span(e.layers)}", xy=(1.0, y_of(e).mean), xycoords=("axes fraction", "data"),
                    xytext=(0.985, f), textcoords="axes fraction", ha="right", va="center", fontsize=7, color="#555555",
                    arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5})  # fmt: skip
    ax.set_xlabel("damage: excess base NLL per token (nats), steered minus base text")
    ax.set_ylabel(f"effect: {YLABEL.get(by, by + ' (your scorer), steered minus base text')}")
    more = f"\nlines: budgets {', '.join(f'{x:g}' for x in b.by_budget)} nats, the same vector at each" if b.others else ""
    ax.set_title(
        f"{title}\nalpha = {alpha:g} (every vector at the same {b.budget:g}-nat p95 budget); grey: random-direction control"
        + more,
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _frontier(ax, b: Board, alpha: float, y_of, colour) -> None:
    """Per vector (controls aside): its points at every budget joined by a thin line in budget order, each labelled
    with its budget in nats (the board's own budget is the point with intervals)."""
    for name in b.ranked():
        pts = []
        for budget, other in b.by_budget.items():
            e = next((x for x in other.at(alpha) if x.name == name), None)
            if e is not None:
                pts.append((budget, e))
        if len(pts) < 2:
            continue
        col = colour(pts[0][1])
        xs, ys = [e.excess_nll.mean for _, e in pts], [y_of(e).mean for _, e in pts]
        ax.plot(xs, ys, color=col, lw=0.8, alpha=0.7, marker=".", ms=4, gid=f"frontier {name}")
        for (budget, _), x, y in zip(pts, xs, ys, strict=True):
            if budget != b.budget:
                ax.annotate(f"{budget:g}", (x, y), textcoords="offset points", xytext=(2, -7), fontsize=6, color=col)


# ---- files ----------------------------------------------------------------------------------------------------------


def write_grid(out: Path, b: Board, title: str, files: dict[str, str]) -> list[Path]:
    """grid.md, grid.csv, grid.svg and grid.png of a judged grid."""
    fig = figure(b, title.lstrip("# "))
    table = csv_text(b, files)
    blobs = {
        "grid.md": markdown(b, title, files).encode(),
        "grid.csv": table.encode(),
        "grid.svg": fig["svg"],
        "grid.png": fig["png"],
        "report.html": grid_report(Path(out), title, table, fig["svg"]).encode(),
    }
    return write_all(Path(out), blobs)


GRID_COLUMNS = ("budget", "method", "layers", "c_star", "c_lo", "c_hi", "p95", "status", "evaluations", "file")


def calibration_lines(rows: list[dict]) -> list[str]:
    """A grid calibrated without the judge (--no-judge): c*, its interval, p95 and status per vector."""
    return [
        "| budget | method | layers | c* | interval | p95 | status | evaluations | file |",
        "| ---: | --- | --- | ---: | --- | ---: | --- | ---: | --- |",
        *(
            f"| {r['budget']} | {r['method']} | {r['layers']} | {r['c_star']} | [{r['c_lo']}, {r['c_hi']}] | {r['p95']} | {r['status']} | "
            f"{r['evaluations']} | {r['file']} |"
            for r in rows
        ),
    ]


def write_calibration_grid(out: Path, rows: list[dict], title: str) -> None:
    """grid.md and grid.csv of a grid calibrated without the judge."""
    md = [
        title,
        "",
        "Target p95 = the budget (nats) +- 0.05; c* with its 95% interval from the calibration prompts (docs/calibration.md). "
        "Calibrated jointly: one batch per solver round. Not judged (--no-judge).",
        "",
        *calibration_lines(rows),
    ]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=GRID_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_all(Path(out), {"grid.md": ("\n".join(md) + "\n").encode(), "grid.csv": buf.getvalue().encode()})
