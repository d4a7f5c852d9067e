"""Claims: a `Study` and Table 1's rows -> R1..R6 of the spec, each PASS, FAIL or MISSING with the numbers
behind it, and claims.md (no torch).

One function per requirement, each reading only the aggregates it needs. Thresholds are
the spec's (R1-R5); R6's numeric criterion was fixed before the study (docs/decisions.md).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .aggregate import Study, _f
from .records import BASE, TARGET, TOL

HOLDOUT_BAND = (0.7, 1.4)  # R1
NLL_OK, NLL_HOT = 2.0, 4.0  # R3
PMASS_OK, PMASS_HOT = 0.1, 0.3  # R4
R6_SPREAD = 0.5  # nats: median over t of the across-seed range of per-token p95 at 1x, per (model, method, window)

Claim = tuple[str, str, str]  # (id, PASS | FAIL | MISSING, the numbers behind it)


def r1_ok(cells: list[dict]) -> bool:
    """Every cell converged (|calib p95 - target| <= tol) and its held-out p95 lies in the band."""
    lo, hi = HOLDOUT_BAND
    return all(
        c["converged"] == "1" and abs(_f(c["calib_p95"]) - TARGET) <= TOL + 1e-12 and lo <= _f(c["holdout_p95"]) <= hi
        for c in cells
    )


def r1(s: Study, rows: list[dict]) -> Claim:
    lo, hi = HOLDOUT_BAND
    cells = s.cells()
    bad = [c for c in cells if not r1_ok([c])]
    conv = sum(c["converged"] == "1" for c in cells)
    inband = sum(lo <= _f(c["holdout_p95"]) <= hi for c in cells)
    hp = [_f(c["holdout_p95"]) for c in cells]
    detail = (
        f"{conv}/{len(cells)} cells converged (|calib p95 - 1| <= {TOL}); holdout p95 in [{lo}, {hi}] in {inband}/{len(cells)} "
        f"(range {min(hp):.2f}-{max(hp):.2f})."
    )
    if bad:
        detail += (
            " Failing cells: "
            + "; ".join(
                f"{c['model']} {c['method']} s{c['seed']} T{c['window']} ({c['status']}, calib {_f(c['calib_p95']):.2f}, holdout {_f(c['holdout_p95']):.2f})"
                for c in bad[:12]
            )
            + (" ..." if len(bad) > 12 else "")
        )
    return ("R1", "PASS" if not bad else "FAIL", detail)


def r2(s: Study, rows: list[dict]) -> Claim:
    r2 = [
        (
            r["model"],
            r["method"],
            r["delta_logit_1x"],
            r["delta_logit_ci_lo"],
            r["delta_logit_ci_hi"],
            r["n_probes"],
            r["c_star_mean"],
        )
        for r in rows
    ]
    if not r2 or any(n == 0 for *_, n, _ in r2):
        return ("R2", "MISSING", "no target-axis logits for some (model, method)")
    fails = [x for x in r2 if not (x[3] > 0 or x[4] < 0)]
    return (
        "R2",
        "PASS" if not fails else "FAIL",
        "delta logit at 1x, mean [95% bootstrap CI] (n probes; c*): "
        + "; ".join(f"{m} {meth} {d:+.2f} [{a:+.2f}, {b:+.2f}] (n={n}; c*={c:.3g})" for m, meth, d, a, b, n, c in r2),
    )


def _per_model(s: Study, rows: list[dict], key: str, ok_all, hot_any, name: str, fmt) -> tuple[str, str] | None:
    """R3/R4's shape: every method ok at 1x and at least one hot at 2x, on every model; None if a value is missing."""
    parts, ok = [], True
    for m in s.models:
        rs = [r for r in rows if r["model"] == m]
        vals1 = [r[key.format(1)] for r in rs]
        vals2 = [r[key.format(2)] for r in rs]
        if any(math.isnan(v) for v in vals1 + vals2):
            return None
        a, b = all(ok_all(v) for v in vals1), any(hot_any(v) for v in vals2)
        ok &= a and b
        parts.append(
            f"{m}: 1x "
            + ", ".join(f"{r['method']} {fmt(r[key.format(1)])}" for r in rs)
            + f" ({'all ok' if a else 'NOT all ok'}); "
            f"2x " + ", ".join(f"{r['method']} {fmt(r[key.format(2)])}" for r in rs) + f" ({'hot for >= 1' if b else 'none hot'})"
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
    )
    return ("R3",) + (v if v else ("MISSING", "no NLL rows"))


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
    )
    if not v:
        return ("R4", "MISSING", "no branch_pmass rows")
    # the means rest on the forks whose rollout was still running: say how many
    n1, n2, n0 = s.pmass(1.0), s.pmass(2.0), s.pmass(None)

    def count(d, key):
        return sum(len(x) for x in d.get(key, {}).values())

    return (
        "R4",
        v[0],
        v[1]
        + ". Scored (uncensored) forks, base | 1x / 2x per method: "
        + " | ".join(
            f"{m}: {count(n0, (m, BASE))} | "
            + ", ".join(f"{meth} {count(n1, (m, meth))} / {count(n2, (m, meth))}" for meth in s.methods)
            for m in s.models
        ),
    )


def r5(s: Study, rows: list[dict]) -> Claim:
    if 2.0 not in s.alphas:
        return ("R5", "MISSING", "no trajectories at dose 2x")
    if len(s.models) < 2 or len(s.methods) < 2:
        return (
            "R5",
            "MISSING",
            f"R5 needs >= 2 methods on >= 2 models; this grid has {len(s.methods)} method(s) on {len(s.models)} model(s)",
        )
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
    return (
        "R5",
        "PASS" if good >= 2 else "FAIL",
        f"max over t <= 50 of per-token p95 KL at 2x (mean over seeds and windows) > 1 nat for >= 2 of 3 methods on {good} of "
        f"{len(crossing)} models (need 2): " + "; ".join(parts),
    )


def r6(s: Study, rows: list[dict]) -> Claim:
    p1 = s.per_t_p95(1.0)
    subsets = [("seed", x, s.cells(seed=x)) for x in s.seeds] + [("window", x, s.cells(window=x)) for x in s.windows]
    same = {f"{k}={v}": r1_ok(c) for k, v, c in subsets}
    spreads = []
    for m in s.models:
        for meth in s.methods:
            for w in s.windows:
                curves = [p1[k] for k in p1 if k[0] == m and k[1] == meth and int(k[3]) == w]
                if len(curves) >= 2:
                    n_t = min(len(c) for c in curves)
                    arr = np.vstack([c[:n_t] for c in curves])
                    spreads.append((m, meth, w, float(np.nanmedian(np.nanmax(arr, 0) - np.nanmin(arr, 0)))))
    if not spreads:
        return ("R6", "MISSING", "needs at least two seeds per (model, method, window)")
    worst = max(spreads, key=lambda x: x[3])
    verdicts = ", ".join(f"{k}: {'holds' if v else 'fails'}" for k, v in same.items())
    ok = len(set(same.values())) == 1 and worst[3] <= R6_SPREAD
    return (
        "R6",
        "PASS" if ok else "FAIL",
        f"criterion: the R1 verdict is the same within every seed and every window ({verdicts}), "
        f"and for every (model, method, window) the median over t of the across-seed range of per-token p95 KL at 1x is <= {R6_SPREAD} nat "
        f"(largest: {worst[0]} {worst[1]} T={worst[2]}: {worst[3]:.2f} nat; median over all: {np.median([x[3] for x in spreads]):.2f}).",
    )


REQUIREMENTS = (r1, r2, r3, r4, r5, r6)


def claims(s: Study, rows: list[dict], expected_cells: int | None = None) -> list[Claim]:
    """Every requirement's verdict; below `expected_cells` each is marked INCOMPLETE."""
    out = [req(s, rows) for req in REQUIREMENTS]
    if expected_cells is not None and len(s.cells()) < expected_cells:
        out = [(i, v if v == "MISSING" else f"{v} (INCOMPLETE)", d) for i, v, d in out]
    return out


def claims_markdown(cl, s: Study, expected_cells: int | None) -> str:
    n = len(s.cells())
    head = ["# Claims report", ""]
    if expected_cells is not None and n < expected_cells:
        head += [f"**INCOMPLETE: {n} of {expected_cells} cells are done.** Verdicts below use the finished cells only.", ""]
    head += [
        f"Built by `isokl report` from the CSV files alone: {n} cells ({len(s.models)} models x {len(s.methods)} methods x "
        f"seeds {s.seeds} x windows {s.windows}).",
        "",
    ]
    body = [f"- **{i}: {v}.** {d}" for i, v, d in cl]
    return "\n".join(head + body + ["", provenance(s)]) + "\n"


def provenance(s: Study) -> str:
    """Code versions, cell times and the summed per-cell seconds, read from calibration.csv."""
    versions = Counter(r["code_version"] for r in s.cal)
    secs: dict[str, float] = defaultdict(float)
    for r in s.cal:
        secs[r["model"]] += _f(r["seconds"])
    times = sorted(r["time"] for r in s.cal)
    return (
        "Provenance (from calibration.csv): code versions "
        + ", ".join(f"{v} ({k} cells)" for v, k in sorted(versions.items()))
        + f"; cells started {times[0]} to {times[-1]}; summed per-cell seconds "
        + ", ".join(f"{m} {secs[m] / 60:.1f} min" for m in s.models)
        + f", total {sum(secs.values()) / 60:.1f} min (model loads and the once-per-model base rows not included)."
    )


def summary(d: str | Path) -> list[str]:
    """One line per claim: its verdict and the first sentence of its numbers (claims.md has them all)."""
    out = []
    for line in (Path(d) / "claims.md").read_text().splitlines():
        if line.startswith("- **R"):
            head, _, rest = line[2:].partition(".** ")
            out.append(f"{head.strip('*')}: {rest.split('. ')[0][:150]}")
    return out
