"""Table 1: a `Study` -> one row per (model, method) over its cells, as markdown and CSV (no torch)."""

from __future__ import annotations

import csv
import io

import numpy as np

from .aggregate import Study, _f
from .records import BASE


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
            rows.append(
                {
                    "model": m,
                    "method": meth,
                    "c_star_mean": cs.mean(),
                    "c_star_sd": cs.std(ddof=1) if len(cs) > 1 else 0.0,
                    "converged": sum(int(c["converged"]) for c in cells),
                    "cells": len(cells),
                    "calib_p95": np.mean([_f(c["calib_p95"]) for c in cells]),
                    "holdout_p95": np.mean([_f(c["holdout_p95"]) for c in cells]),
                    "holdout_p95_min": min(_f(c["holdout_p95"]) for c in cells),
                    "holdout_p95_max": max(_f(c["holdout_p95"]) for c in cells),
                    "delta_logit_1x": d,
                    "delta_logit_ci_lo": lo,
                    "delta_logit_ci_hi": hi,
                    "n_probes": n,
                    "base_nll_ratio_1x": np.mean([nll1[k] for k in keys if k in nll1])
                    if any(k in nll1 for k in keys)
                    else float("nan"),
                    "base_nll_ratio_2x": np.mean([nll2[k] for k in keys if k in nll2])
                    if any(k in nll2 for k in keys)
                    else float("nan"),
                    "pmass_base": pm0,
                    "pmass_change_1x": s.mean_pmass(m, meth, 1.0) - pm0,
                    "pmass_change_2x": s.mean_pmass(m, meth, 2.0) - pm0,
                }
            )
    return rows


def table1_markdown(rows: list[dict]) -> str:
    head = (
        "| model | method | c* (mean +- sd) | converged | calib p95 | holdout p95 [min, max] | delta logit 1x [95% CI] (n) "
        "| base NLL ratio 1x / 2x | pmass change 1x / 2x (base) |"
    )
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


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()
