"""Figures: a `Study` -> PNG and SVG bytes (matplotlib; no torch). Rendered in memory, so that `report.build`
writes every output or none. Colours: the Okabe-Ito palette (colour-blind-safe); captions are drawn in the figure.

Figure 1. Top rows: held-out KL along the rollouts at alpha = 1 and 2, one panel per model. Thick: the pooled p95
over the first t tokens (the statistic the 1-nat target refers to; at t = T it is the cell's held-out p95), mean
over seeds, band = range over seeds; thin: the per-token p95 across prompts of the largest window's cells, mean
over seeds. Line style means the window everywhere (solid: the largest, dashed: the others). No curve is clipped:
a row with an outlying curve is drawn linear up to 1 nat and logarithmic above. Bottom row: mean branch_pmass
against the fork point at alpha 0, 1 (circles) and 2 (squares), with the two-stage bootstrap 95% bands of
Table 1 (seeds, then questions) and the number of scored forks per point.

Figure 2 (when the study has a dose-response): pooled p95 KL, mean KL per token, excess base NLL per token,
delta target logit and, where the folder records it, the share of repetitive rollouts against alpha, per model, for
the cells of the largest window and the control.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np

from ..study.records import BASE
from . import estimate as est
from .index import CONTROLS, Study

OKABE_ITO = {
    "mean_diff": "#0072B2",  # blue
    "pca": "#E69F00",  # orange
    "directional_ablation": "#009E73",  # bluish green
    "additive": "#CC79A7",  # reddish purple
    "random_direction": "#7F7F7F",  # grey: the control
}
EXTRA = ("#D55E00", "#56B4E9", "#F0E442", "#000000")


def color(method: str, methods: list[str]) -> str:
    if method in OKABE_ITO:
        return OKABE_ITO[method]
    return EXTRA[[m for m in methods if m not in OKABE_ITO].index(method) % len(EXTRA)]


def _render(fig) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    out = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=130, metadata={"Date": None} if fmt == "svg" else None)
        out[fmt] = buf.getvalue()
    plt.close(fig)
    return out


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "isokl"  # deterministic SVG ids: rebuilding gives identical files
    import matplotlib.pyplot as plt

    return plt


def _ylim(peaks: list[float]) -> float:
    """A row's upper y-limit: 1.25 x the largest peak that is not an outlier (more than twice the median peak)."""
    if not peaks:
        return 1.5
    med = float(np.median(peaks))
    return 1.25 * max([p for p in peaks if p <= 2 * med] + [1.2])


def _of(s: Study) -> str:
    """A title's concept (folders written before concepts name none: the built-in sentiment)."""
    return f", concept {s.concept}" if s.concept else ""


def _stack(curves: list[np.ndarray]) -> np.ndarray:
    n_t = min(len(c) for c in curves)
    return np.vstack([c[:n_t] for c in curves])


CAPTION1 = (
    "Figure 1. Held-out KL(steered || base) along {horizon}-token greedy rollouts at 1x and 2x the calibrated coefficient c*, "
    "and branch_pmass. Thick lines: pooled p95 over the first t tokens, the statistic calibrated to 1 nat (dotted "
    "line) at t = T; mean over seeds, band = range over seeds. Thin lines: per-token p95 across prompts (cells "
    "calibrated at T = {big}, mean over seeds). Line style is the calibration window: solid T = {big}{small}. A row "
    "whose curves reach far above the others is drawn linear up to 1 nat and logarithmic above (no curve is "
    "clipped). Bottom: mean P(valid true/false answer) when the rollout is cut at fork t, base (black), 1x "
    "(circles), 2x (squares, thin); bands: 95% two-stage bootstrap (seeds, then questions), as Table 1; n = scored "
    "forks per point (each point's n: figure1_pmass.csv)."
)


def figure(s: Study, points: list[dict]) -> dict[str, bytes]:
    """Figure 1 rendered in memory: {"png": ..., "svg": ...}; points: its pmass row (`pmass_points`, computed once by
    the report, which also writes them as figure1_pmass.csv)."""
    plt = _setup()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    alphas = [a for a in (1.0, 2.0) if a in s.alphas]
    nm = len(s.models)
    width = max(4.8 * nm, 10.0)
    fig, axes = plt.subplots(len(alphas) + 1, nm, figsize=(width, 3.4 * (len(alphas) + 1) + 1.6), squeeze=False)
    big = max(s.windows)
    shown = s.methods + s.controls
    for r, alpha in enumerate(alphas):
        per_t = est.per_t_p95(s, alpha)
        lines = []  # (ax, t, y, style...) drawn after the row's y-limit is known
        for c, m in enumerate(s.models):
            for meth in shown:
                for w in [big] if meth in CONTROLS else s.windows:
                    keys = s.keys(m, meth, window=w)
                    if not keys:
                        continue
                    cum = [est.cumulative_p95(s, k, alpha) for k in keys]
                    cum = [x for x in cum if len(x)]
                    if not cum:
                        continue
                    arr = _stack(cum)
                    ls = "-" if w == big else "--"
                    lines.append((c, arr, meth, ls, 2.0, True))
                    if w == big:
                        lines.append((c, _stack([per_t[k] for k in keys if k in per_t]), meth, "-", 0.7, False))
        peaks = [float(np.nanmax(np.nanmean(a, 0))) for _, a, *_ in lines]
        top = _ylim([p for p, (*_, thick) in zip(peaks, lines, strict=True) if thick])
        far = max(peaks, default=0.0) > top  # an outlying curve: no clipping, the row's scale turns logarithmic above 1
        for c, arr, meth, ls, lw, thick in lines:
            ax = axes[r][c]
            t = np.arange(1, arr.shape[1] + 1)
            col = color(meth, shown)
            ax.plot(t, np.nanmean(arr, 0), ls, color=col, lw=lw, alpha=1.0 if thick else 0.55)
            if thick and len(arr) > 1:
                ax.fill_between(t, np.nanmin(arr, 0), np.nanmax(arr, 0), color=col, alpha=0.12, lw=0)
        for c, m in enumerate(s.models):
            ax = axes[r][c]
            ax.axhline(1.0, color="k", ls=":", lw=1)
            if far:
                ax.set_yscale("symlog", linthresh=1.0, linscale=1.0)
                ax.set_ylim(0, 1.25 * max(peaks))
                ticks = [x for x in (0, 0.25, 0.5, 0.75, 1, 2, 3, 5, 10, 20, 50, 100) if x <= 1.25 * max(peaks)]
                ax.set_yticks(ticks, [f"{x:g}" for x in ticks])
                ax.yaxis.set_minor_locator(NullLocator())
            else:
                ax.set_ylim(0, top)
            ax.set_title(f"{m}, dose {alpha:g}x c*" + (" (log scale above 1 nat)" if far else ""), fontsize=10)
            ax.set_xlabel("generated token t")
            ax.set_ylabel("p95 KL (nats)")
    for c, m in enumerate(s.models):
        ax = axes[-1][c]
        counts = []
        for meth, alpha in dict.fromkeys((p["method"], p["alpha"]) for p in points if p["model"] == m):
            pts = [p for p in points if (p["model"], p["method"], p["alpha"]) == (m, meth, alpha)]
            ts, mean = [p["fork_t"] for p in pts], np.array([p["mean"] for p in pts])
            lo, hi = (np.array([p[k] if p["n"] > 1 else p["mean"] for p in pts]) for k in ("lo", "hi"))  # n = 1: no band
            col = "k" if meth == BASE else color(meth, shown)
            mk = None if meth == BASE else "o" if alpha == 1.0 else "s"  # dose by marker: line style means the window
            ax.plot(ts, mean, "-", color=col, lw=2 if meth == BASE else 1.3 if alpha == 1.0 else 0.8, marker=mk, ms=3)
            ax.fill_between(ts, lo, hi, color=col, alpha=0.10, lw=0)
            counts += [p["n"] for p in pts]
        ax.set_ylim(-0.02, 1.02)
        n = f" (n = {min(counts)}-{max(counts)} scored forks per point)" if counts else ""
        ax.set_title(f"{m}: branch_pmass{n}", fontsize=9)
        ax.set_xlabel("fork point t (tokens)")
        ax.set_ylabel("P(valid true/false answer)")
    handles = [Line2D([], [], color=color(m, shown), lw=2, label=m + (" (control)" if m in CONTROLS else "")) for m in shown]
    handles += [Line2D([], [], color="gray", lw=2, ls="-" if w == big else "--", label=f"calibrated at T={w}") for w in s.windows]
    handles += [
        Line2D([], [], color="k", lw=2, label="pmass: base (0x)"),
        Line2D([], [], color="gray", lw=1.3, marker="o", ms=3, label="pmass: 1x"),
        Line2D([], [], color="gray", lw=0.8, marker="s", ms=3, label="pmass: 2x"),
        Line2D([], [], color="k", ls=":", label="1 nat"),
    ]
    others = ", ".join(str(w) for w in s.windows if w != big)
    small = f"; dashed: T = {others}" if others else ""  # one window: no dashed lines to explain
    cap = "\n".join(textwrap.wrap(CAPTION1.format(big=big, small=small, horizon=s.horizon), int(width * 14)))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.075))
    fig.text(0.5, 0.005, cap, ha="center", va="bottom", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.13, 1, 0.97))
    fig.suptitle("Figure 1: iso-KL calibrated steering on held-out prompts" + _of(s), fontsize=11)
    return _render(fig)


CAPTION2 = (
    "Figure 2. Dose-response of the cells calibrated at T = {big} (and the random-direction control, grey): alpha = c / "
    "c*, 0 = the base model. Pooled p95 KL over the {horizon} held-out tokens (band: range over seeds; dotted: 1 nat); mean KL "
    "per token; base NLL per token of the steered rollouts minus that of the base model's own rollouts; delta "
    "target-axis logit against the base model. Mean over seeds; bands other than p95: two-stage bootstrap 95% "
    "intervals (seeds, then prompts or probes). Dotted verticals: 1x and 2x. The excess base NLL need not rise with "
    "the dose: degenerate, repetitive text is cheap for the base model, so at high doses it can fall and "
    "under-read a dose that is too hot; where the folder records it, the last row shows the share of held-out rollouts "
    "that loop (distinct-3 < 0.5), the signal NLL misses."
)


def pmass_points(s: Study) -> list[dict]:
    """The points of Figure 1's pmass row: mean over seeds, the two-stage bootstrap 95% interval (seeds, then
    questions; Table 1's) and n (scored forks) per model, method, dose and fork point (figure1_pmass.csv)."""
    rows = []
    for m in s.models:
        for meth, alpha in [(BASE, 0.0)] + [(meth, a) for a in (1.0, 2.0) for meth in s.methods]:
            for t in sorted(est.pmass_curve(s, m, meth, alpha)):
                e, n = est.pmass_at(s, m, meth, alpha, t)
                rows.append(
                    {"model": m, "method": meth, "alpha": alpha, "fork_t": t, "mean": e.mean, "lo": e.lo, "hi": e.hi, "n": n}
                )
    return rows


def figure2(s: Study) -> dict[str, bytes] | None:
    """Figure 2 (the dose-response), or None when the study has fewer than 3 doses besides 0."""
    if len(s.alphas) < 3:
        return None
    plt = _setup()
    from matplotlib.lines import Line2D

    big = max(s.windows)
    shown = s.methods + s.controls
    panels = [
        ("pooled p95 KL (nats)", "p95"),
        ("mean KL per token (nats)", "mean_kl"),
        ("excess base NLL (nats / token)", "nll"),
        ("delta target logit" if s.has_target else "delta target logit: not measured (no probes)", "logit"),
    ] + ([("repetitive rollouts (distinct-3 < 0.5)", "rep")] if s.has_distinct else [])  # folders that record it
    nm = len(s.models)
    width = max(4.6 * nm, 9.0)
    fig, axes = plt.subplots(len(panels), nm, figsize=(width, 2.9 * len(panels) + 1.4), squeeze=False)
    for c, m in enumerate(s.models):
        for meth in shown:
            keys = s.keys(m, meth, window=big)
            doses = sorted({a for a in s.alphas if any(s.kl(k, a) is not None for k in keys)})
            if not doses:
                continue
            col = color(meth, shown)
            x = [0.0, *doses]
            for r, (_, what) in enumerate(panels):
                ests = []
                for a in doses:
                    if what == "p95":
                        mean, lo, hi = est.seed_range(
                            s, m, meth, big, lambda ks, a=a: np.mean([est.pooled_p95(s, k, a) for k in ks])
                        )
                    else:
                        fn = {
                            "mean_kl": est.mean_kl,
                            "nll": est.excess_nll,
                            "logit": est.delta_logit,
                            "rep": est.repetitive,
                        }[what]
                        e = fn(s, m, meth, a, window=big)
                        mean, lo, hi = e.mean, e.lo, e.hi
                    ests.append((mean, lo, hi))
                b = est.repetitive(s, m, BASE, 0.0) if what == "rep" else None  # at alpha 0: the base model's own share
                y = np.array([(b.mean, b.lo, b.hi) if b else (0.0, 0.0, 0.0), *ests])
                ax = axes[r][c]
                ax.plot(x, y[:, 0], "-o", color=col, lw=1.5, ms=3)
                ax.fill_between(x, y[:, 1], y[:, 2], color=col, alpha=0.13, lw=0)
    for r, (label, what) in enumerate(panels):
        for c, m in enumerate(s.models):
            ax = axes[r][c]
            for a in (1.0, 2.0):
                ax.axvline(a, color="k", ls=":", lw=0.8)
            if what == "p95":
                ax.axhline(1.0, color="k", ls=":", lw=1)
            if what in ("nll", "logit"):
                ax.axhline(0.0, color="k", lw=0.6)
            ax.set_ylabel(label, fontsize=9)
            ax.set_xlabel("alpha = c / c*")
            if r == 0:
                ax.set_title(m, fontsize=10)
    handles = [Line2D([], [], color=color(m, shown), lw=2, label=m + (" (control)" if m in CONTROLS else "")) for m in shown]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.06))
    fig.text(
        0.5,
        0.005,
        "\n".join(textwrap.wrap(CAPTION2.format(big=big, horizon=s.horizon), int(width * 14))),
        ha="center",
        va="bottom",
        fontsize=7.5,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.suptitle("Figure 2: dose-response around the calibrated dose" + _of(s), fontsize=11)
    return _render(fig)
