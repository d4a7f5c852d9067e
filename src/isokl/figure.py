"""Figure 1: a `Study` -> PNG and SVG bytes (matplotlib; no torch). Rendered in memory, so that
`report.build` writes every output or none.

Top rows: per-token p95 KL along the held-out rollouts at alpha = 1 and 2, one panel per
model, one colour per method, band = range over seeds, line style = calibration window,
dotted = the 1-nat target. Bottom row: mean branch_pmass vs fork point at alpha 0, 1, 2.
"""

from __future__ import annotations

import io

import numpy as np

from .aggregate import Study

COLORS = {"mean_diff": "#1f77b4", "pca": "#d62728", "directional_ablation": "#2ca02c"}
STYLES = {20: "-", 50: "--"}  # KL rows: calibration window
PMASS_STYLES = {1.0: ("-.", "o"), 2.0: (":", "s")}  # pmass row: alpha -> (line style, marker), unlike the window styles


def figure(s: Study) -> dict[str, bytes]:
    """Figure 1 rendered in memory: {"png": ..., "svg": ...}."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "isokl"  # deterministic SVG ids: rebuilding gives identical files
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    alphas = [a for a in (1.0, 2.0) if a in s.alphas]
    nm = len(s.models)
    width = max(4.6 * nm, 10.0)  # room for the legend and title even with one model
    fig, axes = plt.subplots(
        len(alphas) + 1, nm, figsize=(width, 3.3 * (len(alphas) + 1)), squeeze=False, constrained_layout=True
    )
    for r, alpha in enumerate(alphas):
        curves = s.per_t_p95(alpha)
        for c, m in enumerate(s.models):
            ax = axes[r][c]
            for meth in s.methods:
                for w in s.windows:
                    cs = [curves[k] for k in curves if k[0] == m and k[1] == meth and int(k[3]) == w]
                    if not cs:
                        continue
                    n_t = min(len(x) for x in cs)
                    arr = np.vstack([x[:n_t] for x in cs])
                    t = np.arange(1, n_t + 1)
                    ax.plot(t, np.nanmean(arr, 0), STYLES.get(w, ":"), color=COLORS.get(meth), lw=1.4)
                    if len(cs) > 1:
                        ax.fill_between(t, np.nanmin(arr, 0), np.nanmax(arr, 0), color=COLORS.get(meth), alpha=0.13, lw=0)
            ax.axhline(1.0, color="k", ls=":", lw=1)  # the target line (the pmass row has no such line)
            ax.set_title(f"{m}, dose {alpha:g}x c*", fontsize=10)
            ax.set_xlabel("generated token t")
            ax.set_ylabel("per-token p95 KL (nats)")
            ax.set_ylim(bottom=0)
    pm_base = s.pmass(None)
    for c, m in enumerate(s.models):
        ax = axes[-1][c]
        b = pm_base.get((m, "base"), {})
        if b:
            ts = sorted(b)
            ax.plot(ts, [np.mean(b[t]) for t in ts], "-", color="k", lw=2, label="base (0x)")
        for alpha, (ls, mk) in PMASS_STYLES.items():
            pmd = s.pmass(alpha)
            for meth in s.methods:
                d = pmd.get((m, meth), {})
                if d:
                    ts = sorted(d)
                    ax.plot(ts, [np.mean(d[t]) for t in ts], ls, color=COLORS.get(meth), lw=1.4, marker=mk, ms=3)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{m}: branch_pmass", fontsize=10)
        ax.set_xlabel("fork point t (tokens)")
        ax.set_ylabel("P(valid true/false answer)")
    handles = [Line2D([], [], color=COLORS.get(m), lw=2, label=m) for m in s.methods]
    handles += [Line2D([], [], color="gray", ls=STYLES.get(w, ":"), label=f"KL rows: calibrated at T={w}") for w in s.windows]
    handles += [Line2D([], [], color="k", lw=2, label="pmass: base")]
    handles += [
        Line2D([], [], color="gray", ls=ls, marker=mk, ms=3, label=f"pmass: {d:g}x") for d, (ls, mk) in PMASS_STYLES.items()
    ]
    handles += [Line2D([], [], color="k", ls=":", label="KL rows: 1 nat (target)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Figure 1: iso-KL calibrated steering (bands: range over seeds)", fontsize=11)
    out = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=130, metadata={"Date": None} if fmt == "svg" else None)
        out[fmt] = buf.getvalue()
    plt.close(fig)
    return out
