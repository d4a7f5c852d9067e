"""Evidence: each requirement's numbers as tables, and its count k/n, for the HTML report's verdict strip (no torch).

claims.md states every verdict with its numbers in a sentence; here the same numbers, read from the
same `Study` and Table 1 rows by the same rules (`claims.r1_ok`, `thresholds`), are laid out as tables
a reader can scan: one row per cell, (model, method) or subset. The verdict itself is always claims'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import estimate as est
from .claims import Claim, peak, r1_ok, r6_spreads, r6_subsets
from .index import Study
from .thresholds import HOLDOUT_BAND, NLL_HOT, NLL_OK, PMASS_HOT, PMASS_OK, R6_SPREAD

Cell = str | float | int | bool | None  # a table cell: text, a number (shown rounded, sorted by value), or empty


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[Cell, ...]]


@dataclass(frozen=True)
class Evidence:
    id: str
    verdict: str  # claims.py's
    k: int | None  # how many units pass the requirement's rule, of n (None: nothing to count)
    n: int | None
    unit: str  # what k/n count
    reason: str  # one line, read after "k/n unit"
    detail: str  # claims.md's sentence, whole
    tables: list[Table] = field(default_factory=list)


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def _methods(rows: list[dict], kind: str = "method") -> list[dict]:
    return [r for r in rows if r["kind"] == kind]


def r1(s: Study, rows: list[dict]) -> tuple[int, int, str, str, list[Table]]:
    cells = s.cells()
    lo, hi = HOLDOUT_BAND
    t = Table(
        "Every cell: calibration and held-out p95 (90% prompt-bootstrap interval of its own window)",
        ("model", "method", "seed", "T", "status", "calib p95", "held-out p95", "interval lo", "interval hi", "passes R1"),
        [
            (
                c["model"],
                c["method"],
                c["seed"],
                c["window"],
                c["status"],
                c["calib_p95"],
                c["holdout_p95"],
                c.get(f"holdout_p95_t{c['window']}_lo"),
                c.get(f"holdout_p95_t{c['window']}_hi"),
                _yes(r1_ok([c])),
            )
            for c in cells
        ],
    )
    k = sum(r1_ok([c]) for c in cells)
    return k, len(cells), "cells", f"converged with held-out p95 in [{lo}, {hi}]", [t]


def r2(s: Study, rows: list[dict]) -> tuple[int, int, str, str, list[Table]]:
    ms, ctrl = _methods(rows), _methods(rows, "control")
    excl = lambda r: r["delta_logit_ci_lo"] > 0 or r["delta_logit_ci_hi"] < 0
    t = Table(
        "Delta logit toward the concept's words at 1x: mean over seeds, 95% interval (seeds, then probes)",
        ("model", "method", "delta logit", "CI lo", "CI hi", "excludes 0", "cells excluding 0", "probes", "c* (mean)"),
        [
            (
                r["model"],
                r["method"],
                r["delta_logit_1x"],
                r["delta_logit_ci_lo"],
                r["delta_logit_ci_hi"],
                _yes(excl(r)),
                f"{r['delta_cells_excluding_0']}/{r['cells']}",
                r["n_probes"],
                r["c_star_mean"],
            )
            for r in ms + ctrl
        ],
    )
    tables = [t]
    if ctrl:
        tables.append(
            Table(
                "Method minus the random-direction control (same seed and probe), 1x",
                ("model", "method", "difference", "CI lo", "CI hi"),
                [
                    (r["model"], r["method"], r["delta_vs_control"], r["delta_vs_control_lo"], r["delta_vs_control_hi"])
                    for r in ms
                    if not math.isnan(r["delta_vs_control"])
                ],
            )
        )
    k = sum(excl(r) for r in ms)
    return k, len(ms), "(model, method)", "with a 1x interval that excludes 0", tables


def _per_model(s: Study, rows: list[dict], ok, hot) -> int:
    """Models on which every method is ok at 1x and at least one is hot at 2x (R3 and R4's rule)."""
    good = 0
    for m in s.models:
        rs = [r for r in _methods(rows) if r["model"] == m]
        good += bool(rs) and all(ok(r) for r in rs) and any(hot(r) for r in rs)
    return good


def r3(s: Study, rows: list[dict]) -> tuple[int, int, str, str, list[Table]]:
    t = Table(
        f"Base-model NLL ratio of the steered text (ok at 1x: <= {NLL_OK}; hot at 2x: > {NLL_HOT}) and excess NLL (nats/token)",
        (
            "model",
            "method",
            "ratio 1x",
            "lo",
            "hi",
            "cells ok 1x",
            "ratio 2x",
            "lo",
            "hi",
            "cells hot 2x",
            "excess 1x",
            "excess 2x",
        ),
        [
            (
                r["model"],
                r["method"],
                r["base_nll_ratio_1x"],
                r["base_nll_ratio_1x_lo"],
                r["base_nll_ratio_1x_hi"],
                f"{r['nll_cells_ok_1x']}/{r['cells']}",
                r["base_nll_ratio_2x"],
                r["base_nll_ratio_2x_lo"],
                r["base_nll_ratio_2x_hi"],
                f"{r['nll_cells_hot_2x']}/{r['cells']}",
                r["excess_nll_1x"],
                r["excess_nll_2x"],
            )
            for r in _methods(rows)
        ],
    )
    k = _per_model(s, rows, lambda r: r["base_nll_ratio_1x"] <= NLL_OK, lambda r: r["base_nll_ratio_2x"] > NLL_HOT)
    n = len(s.models)
    return k, n, "models", "where every method is ok at 1x and one or more is hot at 2x", [t]


def r4(s: Study, rows: list[dict]) -> tuple[int, int, str, str, list[Table]]:
    t = Table(
        f"branch_pmass change from the base model (ok at 1x: within {PMASS_OK}; hot at 2x: a drop > {PMASS_HOT})",
        ("model", "method", "base", "change 1x", "lo", "hi", "cells ok 1x", "change 2x", "lo", "hi", "cells hot 2x"),
        [
            (
                r["model"],
                r["method"],
                r["pmass_base"],
                r["pmass_change_1x"],
                r["pmass_change_1x_lo"],
                r["pmass_change_1x_hi"],
                f"{r['pmass_cells_ok_1x']}/{r['cells']}",
                r["pmass_change_2x"],
                r["pmass_change_2x_lo"],
                r["pmass_change_2x_hi"],
                f"{r['pmass_cells_hot_2x']}/{r['cells']}",
            )
            for r in _methods(rows)
        ],
    )
    k = _per_model(s, rows, lambda r: abs(r["pmass_change_1x"]) <= PMASS_OK, lambda r: r["pmass_change_2x"] < -PMASS_HOT)
    n = len(s.models)
    return k, n, "models", "where every method is ok at 1x and one or more drops at 2x", [t]


def r5(s: Study, rows: list[dict]) -> tuple[int, int, str, str, list[Table]]:
    if 2.0 not in s.alphas:
        return 0, 0, "models", "no trajectories at dose 2x", []
    p1, p2 = est.per_t_p95(s, 1.0), est.per_t_p95(s, 2.0)
    out, good = [], 0
    for m in s.models:
        crossing = 0
        for meth in s.methods:
            hi, lo = peak(p2, m, meth), peak(p1, m, meth)
            if not math.isnan(hi):
                crossing += hi > 1.0
                out.append((m, meth, hi, _yes(hi > 1.0), lo, _yes(lo > 1.0)))
        good += crossing >= 2
    t = Table(
        f"Maximum over t <= {s.horizon} of the per-token p95 KL (mean over seeds and windows), nats",
        ("model", "method", "max at 2x", "> 1 nat", "max at 1x", "> 1 nat at 1x"),
        out,
    )
    n = len(s.models)
    return good, n, "models", "with two or more methods above 1 nat at 2x (need " + str(min(2, n)) + ")", [t]


def r6(s: Study, rows: list[dict]) -> tuple[int, int, str, str, list[Table]]:
    subsets = r6_subsets(s)
    sub = Table(
        "The R1 verdict within each seed and each window",
        ("subset", "value", "cells", "R1 holds"),
        [(k, v, len(c), _yes(r1_ok(c))) for k, v, c in subsets],
    )
    spreads = [(m, meth, w, x, _yes(x <= R6_SPREAD)) for m, meth, w, x in r6_spreads(s)]
    sp = Table(
        f"Median over t of the across-seed range of per-token p95 KL at 1x (at most {R6_SPREAD} nat)",
        ("model", "method", "T", "range (nat)", "within"),
        spreads,
    )
    k = sum(x[3] <= R6_SPREAD for x in spreads)
    same = len({r1_ok(c) for *_, c in subsets}) == 1
    reason = f"within {R6_SPREAD} nat across seeds; R1's verdict {'the same' if same else 'differs'} in every seed and window"
    return k, len(spreads), "(model, method, T)", reason, [sub, sp]


BUILDERS = {"R1": r1, "R2": r2, "R3": r3, "R4": r4, "R5": r5, "R6": r6}


def evidence(s: Study, rows: list[dict], claims: list[Claim]) -> list[Evidence]:
    """One Evidence per claim of claims.md, in its order. A claim that could not be judged (MISSING, NOT MEASURABLE)
    has no count and its sentence as the reason."""
    out = []
    for cid, verdict, detail in claims:
        if verdict.startswith(("MISSING", "NOT MEASURABLE")) or cid not in BUILDERS:
            out.append(Evidence(cid, verdict, None, None, "", detail.split(". ")[0], detail))
            continue
        k, n, unit, reason, tables = BUILDERS[cid](s, rows)
        out.append(Evidence(cid, verdict, k, n, unit, reason, detail, tables))
    return out
