"""Report: the sweep's CSV files -> Figure 1 (PNG, SVG), Table 1 (markdown, CSV) and claims.md.

Imports no torch: files are the only interface between compute and presentation, and
everything here is rebuilt from the CSVs alone (`isokl report DIR`).

Aggregation (DESIGN.md s.6): a "cell" is (model, method, seed, window); Table 1 has one
row per (model, method) over its cells. Per-token p95 at t = the 95th percentile over
held-out prompts of the KL at token t. The claims' thresholds are the spec's (R1-R5);
R6's numeric criterion is stated in `R6_SPREAD` and in the report.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .records import BASE, STUDY_METHODS, STUDY_MODELS, TARGET, TOL, RecordsError, load
from .statistic import P95

HOLDOUT_BAND = (0.7, 1.4)  # R1
NLL_OK, NLL_HOT = 2.0, 4.0  # R3
PMASS_OK, PMASS_HOT = 0.1, 0.3  # R4
R6_SPREAD = 0.5  # nats: median over t of the across-seed range of per-token p95 at 1x, per (model, method, window)
BOOT = 10_000


def _f(x) -> float:
    return float(x) if x not in ("", None) else float("nan")


def order(values, preferred):
    seen = list(dict.fromkeys(values))
    return [p for p in preferred if p in seen] + [v for v in seen if v not in preferred]


class Study:
    """Indexes the CSV rows by cell and computes every aggregate the table, figure and claims use."""

    def __init__(self, data: dict[str, list[dict]]):
        self.data = data
        self.cal = [r for r in data["calibration"]]
        self.models = order([r["model"] for r in self.cal], STUDY_MODELS)
        self.methods = order([r["method"] for r in self.cal], STUDY_METHODS)
        self.seeds = sorted({int(r["seed"]) for r in self.cal})
        self.windows = sorted({int(r["window"]) for r in self.cal})
        self.doses = sorted({_f(r["dose"]) for r in data["trajectory"]} - {0.0})

    def cells(self, model=None, method=None, seed=None, window=None) -> list[dict]:
        return [r for r in self.cal if (model is None or r["model"] == model) and (method is None or r["method"] == method)
                and (seed is None or int(r["seed"]) == seed) and (window is None or int(r["window"]) == window)]

    @staticmethod
    def _key(r) -> tuple:
        return (r["model"], r["method"], r["seed"], r["window"])

    def per_t_p95(self, dose: float) -> dict[tuple, np.ndarray]:
        """cell -> [t] p95 over prompts of per-token KL at `dose`."""
        by = defaultdict(lambda: defaultdict(list))
        for r in self.data["trajectory"]:
            if _f(r["dose"]) == dose and r["valid"] == "1":
                by[self._key(r)][int(r["t"])].append(_f(r["kl"]))
        out = {}
        for k, ts in by.items():
            T = max(ts)
            out[k] = np.array([P95.pooled(ts.get(t, [])) for t in range(1, T + 1)])
        return out

    def nll_ratio(self, dose: float) -> dict[tuple, float]:
        """cell -> mean base NLL of steered rollouts / mean base NLL of the base model's own rollouts."""
        num, base = defaultdict(lambda: [0.0, 0]), defaultdict(lambda: [0.0, 0])
        for r in self.data["nll"]:
            acc = base[r["model"]] if r["method"] == BASE else num[self._key(r)] if _f(r["dose"]) == dose else None
            if acc is not None:
                acc[0] += _f(r["nll_sum"])
                acc[1] += int(r["n_tokens"])
        return {k: (s / n) / (base[k[0]][0] / base[k[0]][1]) for k, (s, n) in num.items() if n and base[k[0]][1]}

    def pmass(self, dose: float | None) -> dict[tuple, dict[int, list[float]]]:
        """(model, method) -> fork t -> uncensored pmass values; dose None = the base model (method 'base')."""
        out = defaultdict(lambda: defaultdict(list))
        for r in self.data["pmass"]:
            if r["censored"] == "1":
                continue
            if dose is None and r["method"] == BASE:
                out[(r["model"], BASE)][int(r["fork_t"])].append(_f(r["pmass"]))
            elif dose is not None and r["method"] != BASE and _f(r["dose"]) == dose:
                out[(r["model"], r["method"])][int(r["fork_t"])].append(_f(r["pmass"]))
        return out

    def mean_pmass(self, model, method, dose) -> float:
        d = self.pmass(dose).get((model, method if dose is not None else BASE), {})
        vals = [v for vs in d.values() for v in vs]
        return float(np.mean(vals)) if vals else float("nan")

    def delta_logit(self, model, method, dose=1.0) -> tuple[float, float, float, int]:
        """Mean over probes of (L at dose, averaged over the cells) - L_base, with a 95% bootstrap CI; n probes."""
        base = {r["probe"]: _f(r["L"]) for r in self.data["target"] if r["model"] == model and r["method"] == BASE}
        st = defaultdict(list)
        for r in self.data["target"]:
            if r["model"] == model and r["method"] == method and _f(r["dose"]) == dose:
                st[r["probe"]].append(_f(r["L"]))
        d = np.array([np.mean(v) - base[p] for p, v in sorted(st.items()) if p in base])
        if not len(d):
            return (float("nan"),) * 3 + (0,)
        rng = np.random.default_rng(0)
        boots = d[rng.integers(0, len(d), size=(BOOT, len(d)))].mean(1)
        return float(d.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)), len(d)


def table1(s: Study) -> list[dict]:
    nll1, nll2 = s.nll_ratio(1.0), s.nll_ratio(2.0)
    rows = []
    for m in s.models:
        for meth in s.methods:
            cells = s.cells(m, meth)
            if not cells:
                continue
            keys = [Study._key(c) for c in cells]
            cs = np.array([_f(c["c_star"]) for c in cells])
            d, lo, hi, n = s.delta_logit(m, meth, 1.0)
            pm0 = s.mean_pmass(m, BASE, None)
            rows.append({
                "model": m, "method": meth,
                "c_star_mean": cs.mean(), "c_star_sd": cs.std(ddof=1) if len(cs) > 1 else 0.0,
                "converged": sum(int(c["converged"]) for c in cells), "cells": len(cells),
                "calib_p95": np.mean([_f(c["calib_p95"]) for c in cells]),
                "holdout_p95": np.mean([_f(c["holdout_p95"]) for c in cells]),
                "holdout_p95_min": min(_f(c["holdout_p95"]) for c in cells),
                "holdout_p95_max": max(_f(c["holdout_p95"]) for c in cells),
                "delta_logit_1x": d, "delta_logit_ci_lo": lo, "delta_logit_ci_hi": hi, "n_probes": n,
                "base_nll_ratio_1x": np.mean([nll1[k] for k in keys if k in nll1]) if any(k in nll1 for k in keys) else float("nan"),
                "base_nll_ratio_2x": np.mean([nll2[k] for k in keys if k in nll2]) if any(k in nll2 for k in keys) else float("nan"),
                "pmass_base": pm0,
                "pmass_change_1x": s.mean_pmass(m, meth, 1.0) - pm0,
                "pmass_change_2x": s.mean_pmass(m, meth, 2.0) - pm0,
            })
    return rows


def table1_markdown(rows: list[dict]) -> str:
    head = ("| model | method | c* (mean +- sd) | converged | calib p95 | holdout p95 [min, max] | delta logit 1x [95% CI] (n) "
            "| base NLL ratio 1x / 2x | pmass change 1x / 2x (base) |")
    lines = [head, "|" + " --- |" * 9]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['c_star_mean']:.4g} +- {r['c_star_sd']:.2g} | {r['converged']}/{r['cells']} | "
            f"{r['calib_p95']:.3f} | {r['holdout_p95']:.2f} [{r['holdout_p95_min']:.2f}, {r['holdout_p95_max']:.2f}] | "
            f"{r['delta_logit_1x']:+.2f} [{r['delta_logit_ci_lo']:+.2f}, {r['delta_logit_ci_hi']:+.2f}] ({r['n_probes']}) | "
            f"{r['base_nll_ratio_1x']:.2f} / {r['base_nll_ratio_2x']:.2f} | "
            f"{r['pmass_change_1x']:+.3f} / {r['pmass_change_2x']:+.3f} ({r['pmass_base']:.2f}) |"
        )
    return "\n".join(lines) + "\n"


def claims(s: Study, rows: list[dict], expected_cells: int | None = None) -> list[tuple[str, str, str]]:
    """[(id, PASS | FAIL | MISSING, the numbers behind it)]."""
    out = []
    lo, hi = HOLDOUT_BAND

    def r1_ok(cells):
        return all(c["converged"] == "1" and abs(_f(c["calib_p95"]) - TARGET) <= TOL + 1e-12 and lo <= _f(c["holdout_p95"]) <= hi for c in cells)

    cells = s.cells()
    bad = [c for c in cells if not r1_ok([c])]
    conv = sum(c["converged"] == "1" for c in cells)
    inband = sum(lo <= _f(c["holdout_p95"]) <= hi for c in cells)
    hp = [_f(c["holdout_p95"]) for c in cells]
    detail = (f"{conv}/{len(cells)} cells converged (|calib p95 - 1| <= {TOL}); holdout p95 in [{lo}, {hi}] in {inband}/{len(cells)} "
              f"(range {min(hp):.2f}-{max(hp):.2f}).")
    if bad:
        detail += " Failing cells: " + "; ".join(
            f"{c['model']} {c['method']} s{c['seed']} T{c['window']} ({c['status']}, calib {_f(c['calib_p95']):.2f}, holdout {_f(c['holdout_p95']):.2f})"
            for c in bad[:12]) + (" ..." if len(bad) > 12 else "")
    out.append(("R1", "PASS" if not bad else "FAIL", detail))

    r2 = [(r["model"], r["method"], r["delta_logit_1x"], r["delta_logit_ci_lo"], r["delta_logit_ci_hi"], r["n_probes"], r["c_star_mean"]) for r in rows]
    if not r2 or any(n == 0 for *_, n, _ in r2):
        out.append(("R2", "MISSING", "no target-axis logits for some (model, method)"))
    else:
        fails = [x for x in r2 if not (x[3] > 0 or x[4] < 0)]
        out.append(("R2", "PASS" if not fails else "FAIL", "delta logit at 1x, mean [95% bootstrap CI] (n probes; c*): " + "; ".join(
            f"{m} {meth} {d:+.2f} [{a:+.2f}, {b:+.2f}] (n={n}; c*={c:.3g})" for m, meth, d, a, b, n, c in r2)))

    def per_model(key, ok_all, hot_any, name, fmt):
        parts, ok = [], True
        for m in s.models:
            rs = [r for r in rows if r["model"] == m]
            vals1 = [r[key.format(1)] for r in rs]
            vals2 = [r[key.format(2)] for r in rs]
            if any(math.isnan(v) for v in vals1 + vals2):
                return None
            a, b = all(ok_all(v) for v in vals1), any(hot_any(v) for v in vals2)
            ok &= a and b
            parts.append(f"{m}: 1x " + ", ".join(f"{r['method']} {fmt(r[key.format(1)])}" for r in rs) + f" ({'all ok' if a else 'NOT all ok'}); "
                         f"2x " + ", ".join(f"{r['method']} {fmt(r[key.format(2)])}" for r in rs) + f" ({'hot for >= 1' if b else 'none hot'})")
        return ("PASS" if ok else "FAIL", f"{name}. " + " | ".join(parts))

    r3 = per_model("base_nll_ratio_{}x", lambda v: v <= NLL_OK, lambda v: v > NLL_HOT,
                   f"base NLL ratio: <= {NLL_OK} at 1x for every method, > {NLL_HOT} at 2x for at least one method, per model", lambda v: f"{v:.2f}")
    out.append(("R3",) + (r3 if r3 else ("MISSING", "no NLL rows")))
    r4 = per_model("pmass_change_{}x", lambda v: abs(v) <= PMASS_OK, lambda v: v < -PMASS_HOT,
                   f"branch_pmass change from base: within {PMASS_OK} at 1x for every method, a drop of more than {PMASS_HOT} at 2x for at least one, per model",
                   lambda v: f"{v:+.3f}")
    if r4:  # the means rest on the forks whose rollout was still running: say how many
        n1, n2, n0 = s.pmass(1.0), s.pmass(2.0), s.pmass(None)
        count = lambda d, key: sum(len(v) for v in d.get(key, {}).values())
        r4 = (r4[0], r4[1] + ". Scored (uncensored) forks, base | 1x / 2x per method: " + " | ".join(
            f"{m}: {count(n0, (m, BASE))} | " + ", ".join(f"{meth} {count(n1, (m, meth))} / {count(n2, (m, meth))}" for meth in s.methods)
            for m in s.models))
    out.append(("R4",) + (r4 if r4 else ("MISSING", "no branch_pmass rows")))

    if 2.0 not in s.doses:
        out.append(("R5", "MISSING", "no trajectories at dose 2x"))
    elif len(s.models) < 2 or len(s.methods) < 2:
        out.append(("R5", "MISSING", f"R5 needs >= 2 methods on >= 2 models; this grid has {len(s.methods)} method(s) on "
                                     f"{len(s.models)} model(s)"))
    else:
        p2 = s.per_t_p95(2.0)
        crossing, parts = {}, []
        for m in s.models:
            n_cross = 0
            for meth in s.methods:
                curves = [p2[k] for k in p2 if k[0] == m and k[1] == meth]
                if curves:
                    peak = float(np.nanmax(np.nanmean(np.vstack(curves), 0)))
                    n_cross += peak > 1.0
                    parts.append(f"{m} {meth} max p95 {peak:.2f}")
            crossing[m] = n_cross
        good = sum(v >= 2 for v in crossing.values())
        out.append(("R5", "PASS" if good >= 2 else "FAIL",
                    f"max over t <= 50 of per-token p95 KL at 2x (mean over seeds and windows) > 1 nat for >= 2 of 3 methods on {good} of {len(crossing)} models "
                    f"(need 2): " + "; ".join(parts)))

    p1 = s.per_t_p95(1.0)
    subsets = [("seed", x, s.cells(seed=x)) for x in s.seeds] + [("window", x, s.cells(window=x)) for x in s.windows]
    same = {f"{k}={v}": r1_ok(c) for k, v, c in subsets}
    spreads = []
    for m in s.models:
        for meth in s.methods:
            for w in s.windows:
                curves = [p1[k] for k in p1 if k[0] == m and k[1] == meth and int(k[3]) == w]
                if len(curves) >= 2:
                    L = min(len(c) for c in curves)
                    arr = np.vstack([c[:L] for c in curves])
                    spreads.append((m, meth, w, float(np.nanmedian(np.nanmax(arr, 0) - np.nanmin(arr, 0)))))
    if not spreads:
        out.append(("R6", "MISSING", "needs at least two seeds per (model, method, window)"))
    else:
        worst = max(spreads, key=lambda x: x[3])
        verdicts = ", ".join(f"{k}: {'holds' if v else 'fails'}" for k, v in same.items())
        consistent = len(set(same.values())) == 1
        ok = consistent and worst[3] <= R6_SPREAD
        out.append(("R6", "PASS" if ok else "FAIL",
                    f"criterion: the R1 verdict is the same within every seed and every window ({verdicts}), "
                    f"and for every (model, method, window) the median over t of the across-seed range of per-token p95 KL at 1x is <= {R6_SPREAD} nat "
                    f"(largest: {worst[0]} {worst[1]} T={worst[2]}: {worst[3]:.2f} nat; median over all: {np.median([x[3] for x in spreads]):.2f})."))
    if expected_cells is not None and len(cells) < expected_cells:
        out = [(i, v if v == "MISSING" else f"{v} (INCOMPLETE)", d) for i, v, d in out]
    return out


def claims_markdown(cl, s: Study, expected_cells: int | None) -> str:
    n = len(s.cells())
    head = ["# Claims report", ""]
    if expected_cells is not None and n < expected_cells:
        head += [f"**INCOMPLETE: {n} of {expected_cells} cells are done.** Verdicts below use the finished cells only.", ""]
    head += [f"Built by `isokl report` from the CSV files alone: {n} cells ({len(s.models)} models x {len(s.methods)} methods x "
             f"seeds {s.seeds} x windows {s.windows}).", ""]
    body = [f"- **{i}: {v}.** {d}" for i, v, d in cl]
    return "\n".join(head + body + ["", provenance(s)]) + "\n"


def provenance(s: Study) -> str:
    """Code versions, cell times and the summed per-cell seconds, read from calibration.csv."""
    versions = Counter(r["code_version"] for r in s.cal)
    secs = defaultdict(float)
    for r in s.cal:
        secs[r["model"]] += _f(r["seconds"])
    times = sorted(r["time"] for r in s.cal)
    return ("Provenance (from calibration.csv): code versions " + ", ".join(f"{v} ({k} cells)" for v, k in sorted(versions.items()))
            + f"; cells started {times[0]} to {times[-1]}; summed per-cell seconds "
            + ", ".join(f"{m} {secs[m] / 60:.1f} min" for m in s.models)
            + f", total {sum(secs.values()) / 60:.1f} min (model loads and the once-per-model base rows not included).")


COLORS = {"mean_diff": "#1f77b4", "pca": "#d62728", "directional_ablation": "#2ca02c"}
STYLES = {20: "-", 50: "--"}  # KL rows: calibration window
PMASS_STYLES = {1.0: ("-.", "o"), 2.0: (":", "s")}  # pmass row: dose (line style, marker), unlike the window styles


def figure(s: Study) -> dict[str, bytes]:
    """Figure 1 rendered in memory: {"png": ..., "svg": ...}."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "isokl"  # deterministic SVG ids: rebuilding gives identical files
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    doses = [d for d in (1.0, 2.0) if d in s.doses]
    nm = len(s.models)
    width = max(4.6 * nm, 10.0)  # room for the legend and title even with one model
    fig, axes = plt.subplots(len(doses) + 1, nm, figsize=(width, 3.3 * (len(doses) + 1)), squeeze=False, constrained_layout=True)
    for r, dose in enumerate(doses):
        curves = s.per_t_p95(dose)
        for c, m in enumerate(s.models):
            ax = axes[r][c]
            for meth in s.methods:
                for w in s.windows:
                    cs = [curves[k] for k in curves if k[0] == m and k[1] == meth and int(k[3]) == w]
                    if not cs:
                        continue
                    L = min(len(x) for x in cs)
                    arr = np.vstack([x[:L] for x in cs])
                    t = np.arange(1, L + 1)
                    ax.plot(t, np.nanmean(arr, 0), STYLES.get(w, ":"), color=COLORS.get(meth), lw=1.4)
                    if len(cs) > 1:
                        ax.fill_between(t, np.nanmin(arr, 0), np.nanmax(arr, 0), color=COLORS.get(meth), alpha=0.13, lw=0)
            ax.axhline(1.0, color="k", ls=":", lw=1)  # the target line (the pmass row has no such line)
            ax.set_title(f"{m}, dose {dose:g}x c*", fontsize=10)
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
        for dose, (ls, mk) in PMASS_STYLES.items():
            pmd = s.pmass(dose)
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
    handles += [Line2D([], [], color="gray", ls=ls, marker=mk, ms=3, label=f"pmass: {d:g}x") for d, (ls, mk) in PMASS_STYLES.items()]
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


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


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


def summary(d: str | Path) -> list[str]:
    """One line per claim: its verdict and the first sentence of its numbers (claims.md has them all)."""
    out = []
    for line in (Path(d) / "claims.md").read_text().splitlines():
        if line.startswith("- **R"):
            head, _, rest = line[2:].partition(".** ")
            out.append(f"{head.strip('*')}: {rest.split('. ')[0][:150]}")
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="isokl report", description="Rebuild Figure 1, Table 1 and claims.md from a sweep's CSVs (no torch).")
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
