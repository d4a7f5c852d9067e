"""Table 1: a `Study` -> one row per (model, method) and per (model, control), as markdown and CSV (no torch).

Means are over seeds (the units); [lo, hi] are two-stage bootstrap 95% intervals (seeds, then probes);
k/n are per-cell counts against the spec's thresholds (docs/decisions.md, Study v2).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable

import numpy as np

from ..study.records import BASE
from . import estimate as est
from .index import Study, key
from .thresholds import HOLDOUT_BAND, NLL_HOT, NLL_OK, PMASS_HOT, PMASS_OK, REPETITIVE, in_band


def count_in_band(cells, col) -> tuple[int, int]:
    """Cells (with a value in col) whose value lies in the R1 band, and how many have a value."""
    vals = [c[col] for c in cells if not math.isnan(c.get(col, math.nan))]
    return sum(in_band(v) for v in vals), len(vals)


def count_overlapping(cells) -> tuple[int, int]:
    """Cells whose own window's prompt-bootstrap interval overlaps the R1 band."""
    lo, hi = HOLDOUT_BAND
    n = k = 0
    for c in cells:
        a, b = c.get(f"holdout_p95_t{c['window']}_lo", math.nan), c.get(f"holdout_p95_t{c['window']}_hi", math.nan)
        if not (math.isnan(a) or math.isnan(b)):
            n += 1
            k += a <= hi and b >= lo
    return k, n


def table1(s: Study) -> list[dict]:
    nll1, nll2 = est.cell_nll_ratios(s, 1.0), est.cell_nll_ratios(s, 2.0)
    rows = []
    for m in s.models:
        ctrl = s.controls[0] if s.controls else None
        for meth in s.methods + s.controls:
            cells = s.cells(m, meth)
            if not cells:
                continue
            keys = [key(c) for c in cells]
            cs = np.array([c["c_star"] for c in cells])
            d = est.delta_logit(s, m, meth, 1.0)
            vs = est.delta_vs_control(s, m, meth, ctrl) if ctrl and meth != ctrl else None
            n1, n2 = est.nll_ratio(s, m, meth, 1.0), est.nll_ratio(s, m, meth, 2.0)
            p1, p2 = est.pmass_change(s, m, meth, 1.0), est.pmass_change(s, m, meth, 2.0)
            q1, q2 = est.pmass_paired(s, m, meth, 1.0), est.pmass_paired(s, m, meth, 2.0)
            cell_d = [est.cell_delta_logit(s, k, 1.0) for k in keys]
            pc1 = [est.cell_pmass_change(s, k, 1.0) for k in keys]
            pc2 = [est.cell_pmass_change(s, k, 2.0) for k in keys]
            rows.append(
                {
                    "model": m,
                    "method": meth,
                    "kind": "control" if meth in s.controls else "method",
                    "cells": len(cells),
                    "converged": sum(int(c["converged"]) for c in cells),
                    "c_star_mean": cs.mean(),
                    "c_star_sd": cs.std(ddof=1) if len(cs) > 1 else 0.0,
                    "calib_p95": np.mean([c["calib_p95"] for c in cells]),
                    "holdout_p95": np.mean([c["holdout_p95"] for c in cells]),
                    "holdout_p95_min": min(c["holdout_p95"] for c in cells),
                    "holdout_p95_max": max(c["holdout_p95"] for c in cells),
                    "r1_in_band": count_in_band(cells, "holdout_p95")[0],
                    "t20_in_band": "{}/{}".format(*count_in_band(cells, "holdout_p95_t20")),
                    "t50_in_band": "{}/{}".format(*count_in_band(cells, "holdout_p95_t50")),
                    "interval_overlaps_band": "{}/{}".format(*count_overlapping(cells)),
                    "delta_logit_1x": d.mean,
                    "delta_logit_ci_lo": d.lo,
                    "delta_logit_ci_hi": d.hi,
                    "n_probes": d.n_values // max(d.n_units, 1),
                    "n_seeds": d.n_units,
                    "delta_cells_excluding_0": sum(e.excludes(0.0) for e in cell_d),
                    "delta_vs_control": vs.mean if vs else float("nan"),
                    "delta_vs_control_lo": vs.lo if vs else float("nan"),
                    "delta_vs_control_hi": vs.hi if vs else float("nan"),
                    "base_nll_ratio_1x": n1.mean,
                    "base_nll_ratio_1x_lo": n1.lo,
                    "base_nll_ratio_1x_hi": n1.hi,
                    "nll_cells_ok_1x": sum(nll1[k] <= NLL_OK for k in keys if k in nll1),
                    "base_nll_ratio_2x": n2.mean,
                    "base_nll_ratio_2x_lo": n2.lo,
                    "base_nll_ratio_2x_hi": n2.hi,
                    "nll_cells_hot_2x": sum(nll2[k] > NLL_HOT for k in keys if k in nll2),
                    "excess_nll_1x": est.excess_nll(s, m, meth, 1.0).mean,
                    "excess_nll_2x": est.excess_nll(s, m, meth, 2.0).mean,
                    "pmass_base": est.base_pmass(s, m),
                    "pmass_change_1x": p1.mean,
                    "pmass_change_1x_lo": p1.lo,
                    "pmass_change_1x_hi": p1.hi,
                    "pmass_cells_ok_1x": sum(abs(v) <= PMASS_OK for v in pc1 if not math.isnan(v)),
                    "pmass_change_2x": p2.mean,
                    "pmass_change_2x_lo": p2.lo,
                    "pmass_change_2x_hi": p2.hi,
                    "pmass_cells_hot_2x": sum(v < -PMASS_HOT for v in pc2 if not math.isnan(v)),
                    "pmass_from_t0_1x": q1.mean,
                    "pmass_from_t0_2x": q2.mean,
                    **_repetitive(s, m, meth),
                }
            )
    return rows


def _ci(r, key, fmt="+.2f", lo=None, hi=None) -> str:
    lo, hi = r[lo or f"{key}_lo"], r[hi or f"{key}_hi"]
    if math.isnan(r[key]):
        return "-"
    return f"{r[key]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _n(r: dict, key: str) -> str:
    """'k/n': the cells of this row meeting a threshold, out of its cells."""
    return f"{r[key]}/{r['cells']}"


# Table 1's columns, one entry each: (header, the cell of a row). A new column is one line here.
TABLE1: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("model", lambda r: r["model"]),
    ("method", lambda r: f"{r['method']} (control)" if r["kind"] == "control" else r["method"]),
    ("c* (mean +- sd)", lambda r: f"{r['c_star_mean']:.4g} +- {r['c_star_sd']:.2g}"),
    ("converged", lambda r: _n(r, "converged")),
    (
        "holdout p95, own window: mean [min, max]; in band",
        lambda r: f"{r['holdout_p95']:.2f} [{r['holdout_p95_min']:.2f}, {r['holdout_p95_max']:.2f}]; {_n(r, 'r1_in_band')}",
    ),
    ("in band at t <= 20 / 50", lambda r: f"{_count(r['t20_in_band'])} / {_count(r['t50_in_band'])}"),
    ("delta logit 1x [95% CI]; cells excl. 0", lambda r: _delta(r)),
    ("minus control [95% CI]", lambda r: "not measured" if r["n_probes"] == 0 else _ci(r, "delta_vs_control")),
    ("base NLL ratio 1x [CI]; cells <= 2", lambda r: f"{_ci(r, 'base_nll_ratio_1x', '.2f')}; {_n(r, 'nll_cells_ok_1x')}"),
    ("2x [CI]; cells > 4", lambda r: f"{_ci(r, 'base_nll_ratio_2x', '.2f')}; {_n(r, 'nll_cells_hot_2x')}"),
    ("pmass change 1x [CI]; cells ok", lambda r: f"{_ci(r, 'pmass_change_1x', '+.3f')}; {_n(r, 'pmass_cells_ok_1x')}"),
    ("2x [CI]; cells < -0.3", lambda r: f"{_ci(r, 'pmass_change_2x', '+.3f')}; {_n(r, 'pmass_cells_hot_2x')}"),
    ("pmass from t = 0, 1x / 2x", lambda r: f"{r['pmass_from_t0_1x']:+.3f} / {r['pmass_from_t0_2x']:+.3f}"),
    ("repetitive rollouts 1x [CI] / 2x (base)", lambda r: _rep(r)),
)


def table1_markdown(rows: list[dict], title: str = "") -> str:
    """title: lines above the table (a concept study's name and protocol); "" for folders from before concepts."""
    lines = ["| " + " | ".join(h for h, _ in TABLE1) + " |", "|" + " --- |" * len(TABLE1)]
    lines += ["| " + " | ".join(cell(r) for _, cell in TABLE1) + " |" for r in rows]
    notes = (
        "\nMeans over seeds; [95% CI]: two-stage bootstrap (seeds, then probes; 10,000 resamples). k/n: cells meeting "
        "the spec's threshold (holdout p95 in [0.7, 1.4]; the cell's own probe interval excludes 0; base NLL ratio <= 2 "
        "at 1x, > 4 at 2x; pmass within 0.1 of base at 1x, a drop > 0.3 at 2x). 'minus control': delta logit minus "
        "the random direction's, same seed and probe, in the control's window. pmass from t = 0: pmass at fork t minus "
        f"at fork 0, same question and dose, forks t >= 5. repetitive: share of held-out rollouts whose distinct-3 is "
        f"below {REPETITIVE} (a loop; 'not recorded' in folders that predate it). {BASE}: the unsteered model.\n"
    )
    return title + "\n".join(lines) + "\n" + notes


def _repetitive(s: Study, m: str, meth: str) -> dict:
    """Table 1's degeneration columns: share of repetitive held-out rollouts at 1x [CI] and 2x, and the base model's."""
    one, two, base = est.repetitive(s, m, meth, 1.0), est.repetitive(s, m, meth, 2.0), est.repetitive(s, m, BASE, 0.0)
    return {"repetitive_1x": one.mean, "repetitive_1x_lo": one.lo, "repetitive_1x_hi": one.hi, "repetitive_2x": two.mean,
            "repetitive_base": base.mean}  # fmt: skip


def _rep(r: dict) -> str:
    if math.isnan(r["repetitive_1x"]):
        return "not recorded"
    return f"{_ci(r, 'repetitive_1x', '.2f')} / {r['repetitive_2x']:.2f} ({r['repetitive_base']:.2f})"


def _count(k_of_n: str) -> str:
    """'k/n', or '-' where no cell has the value (a held-out window longer than the rollouts)."""
    return "-" if k_of_n.endswith("/0") else k_of_n


def _delta(r: dict) -> str:
    """The target-axis column: 'not measured' where the concept has no probes (never a silent 0 or a dash)."""
    if r["n_probes"] == 0:
        return "not measured (no probes)"
    return f"{_ci(r, 'delta_logit_1x', lo='delta_logit_ci_lo', hi='delta_logit_ci_hi')}; {_n(r, 'delta_cells_excluding_0')}"


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()
