"""Claims: a `Study` (index.py) and Table 1's rows -> R1..R6 of the spec, each PASS, FAIL or MISSING with the numbers
behind it, and claims.md (no torch).

One function per requirement, each reading only the aggregates it needs. Thresholds are
the spec's (R1-R5); R6's numeric criterion was fixed before the study (docs/decisions.md).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from ..study.records import BASE, TARGET, TOL
from . import estimate as est
from .index import Study
from .table import count_in_band, count_overlapping
from .thresholds import HOLDOUT_BAND, NLL_HOT, NLL_OK, PMASS_HOT, PMASS_OK, R6_SPREAD, in_band

Claim = tuple[str, str, str]  # (id, PASS | FAIL | MISSING | NOT MEASURABLE, the numbers behind it)
NOT_MEASURABLE = "NOT MEASURABLE"  # the concept lacks what the requirement measures (R2 without probes)


def r1_ok(cells: list[dict]) -> bool:
    """Every cell converged (|calib p95 - target| <= tol) and its held-out p95 lies in the band."""
    return all(c["converged"] and abs(c["calib_p95"] - TARGET) <= TOL + 1e-12 and in_band(c["holdout_p95"]) for c in cells)


def r1(s: Study, rows: list[dict]) -> Claim:
    lo, hi = HOLDOUT_BAND
    cells = s.cells()
    bad = [c for c in cells if not r1_ok([c])]
    conv = sum(c["converged"] for c in cells)
    inband = count_in_band(cells, "holdout_p95")[0]
    hp = [c["holdout_p95"] for c in cells]
    detail = (
        f"{conv}/{len(cells)} cells converged (|calib p95 - 1| <= {TOL}); holdout p95 in [{lo}, {hi}] in {inband}/{len(cells)} "
        f"(range {min(hp):.2f}-{max(hp):.2f})."
    )
    t20, t50, ov = count_in_band(cells, "holdout_p95_t20"), count_in_band(cells, "holdout_p95_t50"), count_overlapping(cells)
    if t20[1] or t50[1]:
        judged = "; ".join(
            f"over t <= {w}: {k}/{n}" + (" in band" if i == 0 else "")
            for i, (w, (k, n)) in enumerate((w, c) for w, c in ((20, t20), (50, t50)) if c[1])
        )  # a window the rollouts do not reach is left out
        detail += (
            f" Every cell judged on the same held-out rollouts {judged}. Cells whose 90% prompt-bootstrap interval (own "
            f"window) overlaps the band: {ov[0]}/{ov[1]}."
        )
    if bad:
        detail += (
            " Failing cells: "
            + "; ".join(
                f"{c['model']} {c['method']} s{c['seed']} T{c['window']} ({c['status']}, calib {c['calib_p95']:.2f}, holdout {c['holdout_p95']:.2f})"
                for c in bad[:12]
            )
            + (" ..." if len(bad) > 12 else "")
        )
    return ("R1", "PASS" if not bad else "FAIL", detail)


def r2(s: Study, rows: list[dict]) -> Claim:
    rs = [r for r in rows if r["kind"] == "method"]
    if s.concept and not s.has_target:
        return (
            "R2",
            NOT_MEASURABLE,
            f"the concept {s.concept} has no probes (probes.jsonl + words.json), so the target axis was not measured; "
            "R2 needs it (docs/concepts.md)",
        )
    if not rs or any(r["n_probes"] == 0 for r in rs):
        return ("R2", "MISSING", "no target-axis logits for some (model, method)")
    fails = [r for r in rs if not (r["delta_logit_ci_lo"] > 0 or r["delta_logit_ci_hi"] < 0)]
    detail = (
        "delta logit at 1x, mean over seeds [95% CI, seeds then probes] (cells whose own interval excludes 0; n probes; "
        "c*): "
        + "; ".join(
            f"{r['model']} {r['method']} {r['delta_logit_1x']:+.2f} [{r['delta_logit_ci_lo']:+.2f}, "
            f"{r['delta_logit_ci_hi']:+.2f}] ({r['delta_cells_excluding_0']}/{r['cells']} cells; n={r['n_probes']}; "
            f"c*={r['c_star_mean']:.3g})"
            for r in rs
        )
        + f". {len(rs) - len(fails)}/{len(rs)} (model, method) intervals exclude 0."
    )
    ctrl = [r for r in rows if r["kind"] == "control"]
    if ctrl:
        detail += (
            " Random-direction control at 1 nat: "
            + "; ".join(
                f"{r['model']} {r['delta_logit_1x']:+.2f} [{r['delta_logit_ci_lo']:+.2f}, {r['delta_logit_ci_hi']:+.2f}]"
                for r in ctrl
            )
            + ". Method minus control (same seed and probe): "
            + "; ".join(
                f"{r['model']} {r['method']} {r['delta_vs_control']:+.2f} [{r['delta_vs_control_lo']:+.2f}, "
                f"{r['delta_vs_control_hi']:+.2f}]"
                for r in rs
                if not math.isnan(r["delta_vs_control"])
            )
            + "."
        )
    return ("R2", "PASS" if not fails else "FAIL", detail)


def _per_model(
    s: Study, rows: list[dict], key: str, ok_all, hot_any, name: str, fmt, counts: tuple[str, str] = ("", "")
) -> tuple[str, str] | None:
    """R3/R4's shape: every method ok at 1x and at least one hot at 2x, on every model; None if a value is missing.
    counts: the table's per-cell count columns at 1x and 2x, shown as (k/n cells)."""

    def count(r, a):
        col = counts[a - 1]
        return f" ({r[col]}/{r['cells']} cells)" if col and col in r else ""

    parts, ok = [], True
    for m in s.models:
        rs = [r for r in rows if r["model"] == m and r["kind"] == "method"]
        vals1 = [r[key.format(1)] for r in rs]
        vals2 = [r[key.format(2)] for r in rs]
        if any(math.isnan(v) for v in vals1 + vals2):
            return None
        a, b = all(ok_all(v) for v in vals1), any(hot_any(v) for v in vals2)
        ok &= a and b
        parts.append(
            f"{m}: 1x "
            + ", ".join(f"{r['method']} {fmt(r[key.format(1)])}{count(r, 1)}" for r in rs)
            + f" ({'all ok' if a else 'NOT all ok'}); "
            "2x "
            + ", ".join(f"{r['method']} {fmt(r[key.format(2)])}{count(r, 2)}" for r in rs)
            + f" ({'hot for >= 1' if b else 'none hot'})"
        )
    return ("PASS" if ok else "FAIL", f"{name}. " + " | ".join(parts))


def r3(s: Study, rows: list[dict]) -> Claim:
    v = _per_model(
        s,
        rows,
        "base_nll_ratio_{}x",
        lambda v: v <= NLL_OK,
        lambda v: v > NLL_HOT,
        f"base NLL ratio: <= {NLL_OK} at 1x for every method, > {NLL_HOT} at 2x for at least one method, per model",
        lambda v: f"{v:.2f}",
        ("nll_cells_ok_1x", "nll_cells_hot_2x"),
    )
    if not v:
        return ("R3", "MISSING", "no NLL rows")
    excess = "; ".join(
        f"{r['model']} {r['method']} {r['excess_nll_1x']:+.2f} / {r['excess_nll_2x']:+.2f}" for r in rows if r["kind"] == "method"
    )
    return (
        "R3",
        v[0],
        v[1] + ". The ratio's denominator is the base model's own greedy text (a mode-seeking floor); the excess base "
        "NLL in nats per token (steered minus base, same prompts), 1x / 2x: " + excess,
    )


def r4(s: Study, rows: list[dict]) -> Claim:
    v = _per_model(
        s,
        rows,
        "pmass_change_{}x",
        lambda v: abs(v) <= PMASS_OK,
        lambda v: v < -PMASS_HOT,
        f"branch_pmass change from base: within {PMASS_OK} at 1x for every method, a drop of more than {PMASS_HOT} at 2x "
        "for at least one, per model",
        lambda v: f"{v:+.3f}",
        ("pmass_cells_ok_1x", "pmass_cells_hot_2x"),
    )
    if not v:
        return ("R4", "MISSING", "no branch_pmass rows")
    # the means rest on the forks whose rollout was still running: say how many
    scored = " | ".join(
        f"{m}: {est.pmass_counts(s, m, BASE, 0.0)} | "
        + ", ".join(f"{meth} {est.pmass_counts(s, m, meth, 1.0)} / {est.pmass_counts(s, m, meth, 2.0)}" for meth in s.methods)
        for m in s.models
    )
    paired = "; ".join(
        f"{r['model']} {r['method']} {r['pmass_from_t0_1x']:+.3f} / {r['pmass_from_t0_2x']:+.3f}"
        for r in rows
        if r["kind"] == "method"
    )
    return (
        "R4",
        v[0],
        v[1]
        + ". Scored (uncensored) forks, base | 1x / 2x per method: "
        + scored
        + ". Change along the rollout, from fork t = 0 (same question and dose, t >= 5), 1x / 2x: "
        + paired,
    )


def r5(s: Study, rows: list[dict]) -> Claim:
    if 2.0 not in s.alphas:
        return ("R5", "MISSING", "no trajectories at dose 2x")
    if len(s.methods) < 2:
        return ("R5", "MISSING", f"R5 needs >= 2 methods; this grid has {len(s.methods)} method(s)")
    need = min(2, len(s.models))  # the spec's 2 of 3 models; a one-model study is read on its one model
    p1, p2 = est.per_t_p95(s, 1.0), est.per_t_p95(s, 2.0)
    crossing, parts, cross1 = {}, [], 0
    for m in s.models:
        n_cross = 0
        for meth in s.methods:
            hi, lo = peak(p2, m, meth), peak(p1, m, meth)
            if not math.isnan(hi):
                n_cross += hi > 1.0
                cross1 += lo > 1.0
                parts.append(f"{m} {meth} max p95 {hi:.2f} (1x: {lo:.2f})")
        crossing[m] = n_cross
    good = sum(v >= 2 for v in crossing.values())
    one = " (one model: R5 read on it alone)" if need < 2 else ""
    n = len(s.models) * len(s.methods)
    caveat = (
        f" At 1x the same maximum also exceeds 1 nat for {cross1}/{n} (model, method): R5 as written does not separate "
        "1x from 2x."
        if cross1
        else ""
    )
    return (
        "R5",
        "PASS" if good >= need else "FAIL",
        f"max over t <= {s.horizon} of per-token p95 KL at 2x (mean over seeds and windows) > 1 nat for >= 2 of "
        f"{len(s.methods)} methods on {good} of {len(crossing)} models (need {need}){one}: " + "; ".join(parts) + "." + caveat,
    )


def peak(curves, m, meth) -> float:
    """R5's number: the maximum over t of the per-token p95 curve of (m, meth), averaged over its cells (NaN: none)."""
    cs = [curves[k] for k in curves if k[0] == m and k[1] == meth]
    if not cs:
        return float("nan")
    n_t = min(len(c) for c in cs)
    return float(np.nanmax(np.nanmean(np.vstack([c[:n_t] for c in cs]), 0)))


def r6_subsets(s: Study) -> list[tuple[str, int, list[dict]]]:
    """R6's subsets: (seed or window, its value, its cells)."""
    return [("seed", x, s.cells(seed=x)) for x in s.seeds] + [("window", x, s.cells(window=x)) for x in s.windows]


def r6_spreads(s: Study) -> list[tuple[str, str, int, float]]:
    """R6's numbers: per (model, method, window) with two or more seeds, the median over t of the across-seed range of
    per-token p95 KL at 1x."""
    p1 = est.per_t_p95(s, 1.0)
    spreads = []
    for m in s.models:
        for meth in s.methods:
            for w in s.windows:
                curves = [p1[k] for k in p1 if k[0] == m and k[1] == meth and k[3] == w]
                if len(curves) >= 2:
                    n_t = min(len(c) for c in curves)
                    arr = np.vstack([c[:n_t] for c in curves])
                    spreads.append((m, meth, w, float(np.nanmedian(np.nanmax(arr, 0) - np.nanmin(arr, 0)))))
    return spreads


def r6(s: Study, rows: list[dict]) -> Claim:
    subsets = r6_subsets(s)
    same = {f"{k}={v}": r1_ok(c) for k, v, c in subsets}
    spreads = r6_spreads(s)
    if not spreads:
        return ("R6", "MISSING", "needs at least two seeds per (model, method, window)")
    worst = max(spreads, key=lambda x: x[3])
    verdicts = ", ".join(f"{k}: {'holds' if v else 'fails'}" for k, v in same.items())
    ok = len(set(same.values())) == 1 and worst[3] <= R6_SPREAD
    # the criterion's blind spot: "the same verdict everywhere" also holds when R1 fails in every seed and window
    blind = (
        " R1 fails in every seed and window here, so the verdict is stable only in failing: read R6 beside R1."
        if ok and not any(same.values())
        else " (The criterion would also pass if R1 failed in every seed and window: read it beside R1.)"
    )
    return (
        "R6",
        "PASS" if ok else "FAIL",
        f"criterion: the R1 verdict is the same within every seed and every window ({verdicts}), "
        f"and for every (model, method, window) the median over t of the across-seed range of per-token p95 KL at 1x is <= {R6_SPREAD} nat "
        f"(largest: {worst[0]} {worst[1]} T={worst[2]}: {worst[3]:.2f} nat; median over all: {np.median([x[3] for x in spreads]):.2f})."
        + blind,
    )


REQUIREMENTS = (r1, r2, r3, r4, r5, r6)


def claims(s: Study, rows: list[dict], expected_cells: int | None = None) -> list[Claim]:
    """Every requirement's verdict; with fewer cells (controls included) than `expected_cells`, or than the grid
    the data span when that is None, each is marked INCOMPLETE."""
    out = [req(s, rows) for req in REQUIREMENTS]
    if _missing(s, expected_cells):
        out = [(i, v if v in ("MISSING", NOT_MEASURABLE) else f"{v} (INCOMPLETE)", d) for i, v, d in out]
    return out


def _missing(s: Study, expected_cells: int | None) -> tuple[int, int] | None:
    """(cells present, cells expected) when the study is unfinished, else None."""
    have, want = len(s.cells(controls=True)), expected_cells or s.grid_cells()
    return (have, want) if have < want else None


def claims_markdown(cl, s: Study, expected_cells: int | None = None, protocol: str = "") -> str:
    n = len(s.cells())
    head = ["# Claims report" + (f": concept {s.concept}" if s.concept else ""), ""]
    if protocol:
        head += [protocol, ""]
    if missing := _missing(s, expected_cells):
        have, want = missing
        head += [f"**INCOMPLETE: {have} of {want} cells are done.** Verdicts below use the finished cells only.", ""]
    head += [
        f"Built by `isokl report` from the CSV files alone: {n} cells ({len(s.models)} models x {len(s.methods)} methods x "
        f"seeds {s.seeds} x windows {s.windows})"
        + (f", plus {len(s.cells(controls=True)) - n} control cells ({', '.join(s.controls)})" if s.controls else "")
        + ". Means are over seeds; intervals are two-stage bootstraps (seeds, then probes); k/n count cells.",
        "",
    ]
    body = [f"- **{i}: {v}.** {d}" for i, v, d in cl]
    return "\n".join(head + body + ["", provenance(s)]) + "\n"


def provenance(s: Study) -> str:
    """Code versions, cell times and the summed per-cell seconds, read from calibration.csv."""
    versions = Counter(r["code_version"] for r in s.cal)
    secs: dict[str, float] = defaultdict(float)
    for r in s.cal:
        secs[r["model"]] += r["seconds"]
    times = sorted(r["time"] for r in s.cal)
    return (
        "Provenance (from calibration.csv): code versions "
        + ", ".join(f"{v} ({k} cells)" for v, k in sorted(versions.items()))
        + f"; cells started {times[0]} to {times[-1]}; summed per-cell seconds "
        + ", ".join(f"{m} {secs[m] / 60:.1f} min" for m in s.models)
        + f", total {sum(secs.values()) / 60:.1f} min (model loads and the once-per-model base rows not included)."
    )


def summary(cl: list[Claim]) -> list[str]:
    """One line per claim: its verdict and the first sentence of its numbers (claims.md has them all)."""
    return [f"{i}: {v}: {d.split('. ')[0][:150]}" for i, v, d in cl]
