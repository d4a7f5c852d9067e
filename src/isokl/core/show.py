"""Show: the library's results -> a short `__repr__` (never a whole tensor) and notebook HTML (`_repr_html_`): inline
CSS only, nothing fetched. Tokens are coloured by per-token KL on report.html's fixed scale (`STOPS`, 0 .. KL_SCALE
nats, the same gradient as report/assets/page.js; a test keeps the two equal), the value in each token's title.
No torch: every value shown is already a float or a string.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

KL_SCALE = 2.0  # nats: report.html's colour scale (report.page.KL_SCALE) runs from 0 to this
# (fraction of the scale, rgb): the gradient of report.html's legend (report/assets/page.js, STOPS)
STOPS = ((0.0, (255, 255, 255)), (0.25, (253, 212, 158)), (0.5, (252, 141, 89)), (0.75, (227, 74, 51)), (1.0, (179, 0, 0)))
TABLE = "border-collapse:collapse;font:13px/1.4 system-ui,sans-serif"
CELL = "border:1px solid #ddd;padding:2px 8px;text-align:right"


def colour(kl: float) -> str:
    """A KL in nats -> its colour on the fixed scale (darkest at KL_SCALE and above), as page.js computes it."""
    x = min(max(kl / KL_SCALE, 0.0), 1.0) if math.isfinite(kl) else 1.0
    i = 1
    while i < len(STOPS) - 1 and STOPS[i][0] < x:
        i += 1
    (a, ca), (b, cb) = STOPS[i - 1], STOPS[i]
    f = (x - a) / (b - a)
    return "rgb(" + ",".join(str(round(u + f * (v - u))) for u, v in zip(ca, cb, strict=True)) + ")"


def tokens_html(pieces: Sequence[str], kl: Sequence[float]) -> str:
    """Each token's text on its KL's colour, the value on hover; >= 1 nat also underlined (as in report.html)."""
    spans = []
    for text, v in zip(pieces, kl, strict=True):
        dark = math.isfinite(v) and v / KL_SCALE > 0.7
        style = f"background:{colour(v)}" + (";color:#fff" if dark else "") + (";text-decoration:underline" if v >= 1 else "")
        spans.append(f'<span title="KL {v:.3f} nats" style="{style}">{html.escape(text)}</span>')
    return '<span style="white-space:pre-wrap;font-family:ui-monospace,monospace">' + "".join(spans) + "</span>"


def legend() -> str:
    stops = ", ".join(f"{colour(f * KL_SCALE)} {100 * f:.0f}%" for f, _ in STOPS)
    return (
        '<div style="font:12px system-ui,sans-serif;color:#555">per-token KL(steered || base), nats, fixed scale: 0 '
        f'<span style="display:inline-block;width:120px;height:10px;background:linear-gradient(to right, {stops})"></span>'
        f" {KL_SCALE:g}+ (hover a token for its value)</div>"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f'<th style="{CELL}">{html.escape(str(h))}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{CELL}">{html.escape(str(v))}</td>' for v in r) + "</tr>" for r in rows)
    return f'<table style="{TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def sparkline(cs: Sequence[float], values: Sequence[float], target: float, width: int = 160, height: int = 40) -> str:
    """The solver's steps as an inline SVG: p95 against log c, one dot per evaluation, the target as a line."""
    pts = [(c, v) for c, v in zip(cs, values, strict=True) if c > 0 and math.isfinite(v) and v > 0]
    if not pts:
        return ""
    xs, ys = [math.log(c) for c, _ in pts], [math.log(v) for _, v in pts] + [math.log(target)]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = lambda x: 4 + (width - 8) * ((x - x0) / (x1 - x0) if x1 > x0 else 0.5)
    sy = lambda y: height - 4 - (height - 8) * ((y - y0) / (y1 - y0) if y1 > y0 else 0.5)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#333"><title>c = {c:.4g}, p95 = {v:.4g}</title></circle>'
        for (c, v), x, y in zip(pts, xs, ys, strict=False)
    )
    line = f'<line x1="0" x2="{width}" y1="{sy(math.log(target)):.1f}" y2="{sy(math.log(target)):.1f}" stroke="#c00" stroke-dasharray="3 2"/>'
    return f'<svg width="{width}" height="{height}" role="img" aria-label="p95 against log c per solver step">{line}{dots}</svg>'


def result_repr(res: Any) -> str:
    """CalibrationResult -> one line: the vector, c* with its interval, p95, status, evaluations."""
    iv = res.c_interval
    band = f" [{iv.lo:.4g}, {iv.hi:.4g}]" if math.isfinite(iv.lo) and math.isfinite(iv.hi) else ""
    return (
        f"CalibrationResult({res.vector.label} on {res.vector.model_id}: c* = {res.c_star:.6g}{band}, "
        f"p95 = {res.p95:.4f}, {res.status}, {res.evaluations} evaluations)"
    )


def result_html(res: Any) -> str:
    """CalibrationResult -> a small table (c*, interval, p95, converged) and its solver steps (a sparkline and a
    table), plus the diagnosis where it did not converge."""
    cal = res.vector.calibration
    iv = res.c_interval
    rows = [
        ("vector", f"{res.vector.label} on {res.vector.model_id}"),
        ("c*", f"{res.c_star:.6g}"),
        ("interval", f"[{iv.lo:.4g}, {iv.hi:.4g}] ({iv.describe()})" if math.isfinite(iv.lo) else iv.describe()),
        ("p95", f"{res.p95:.4f} (target {cal.target:g}, T = {cal.window}, {cal.n_prompts} prompts, {cal.dtype})"),
        ("converged", f"{str(res.converged).lower()} ({res.status})"),
    ]
    why = res.note or res.error
    steps = [(i + 1, f"{h.c:.5g}", f"{'' if h.complete else '> '}{h.p95:.4f}") for i, h in enumerate(res.history)]
    spark = sparkline([h.c for h in res.history], [h.p95 for h in res.history], cal.target)
    return (
        "<div>"
        + table(("", ""), rows)
        + (f'<p style="color:#a00;font:13px system-ui,sans-serif">{html.escape(why)}</p>' if why else "")
        + f"<details><summary>{len(steps)} solver steps {spark}</summary>"
        + table(("step", "c", "p95"), steps)
        + "</details></div>"
    )
