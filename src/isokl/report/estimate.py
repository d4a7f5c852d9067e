"""Estimate: a `Study` index -> every per-cell, per-seed and per-(model, method) number that Table 1, the claims and
the figures use, one short function per metric (numpy; no torch).

Per-token p95 at t = the statistic (`statistic.P95`) across held-out prompts of the KL at
token t; pooled p95 over the first t tokens = the statistic the 1-nat target refers to.
Seeds are the units of inference (docs/decisions.md, Study v2): the functions over a
(model, method) return an `inference.Estimate` (mean over seeds, two-stage bootstrap
interval); a seed's value for a prompt, probe or question is the mean over that seed's cells.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..core.stats.statistic import P95
from ..study.records import BASE
from .index import Key, Study, base_key
from .inference import Estimate, hierarchical
from .thresholds import REPETITIVE

# ---- KL ---------------------------------------------------------------------------------------------------------


def prompt_p95(s: Study, k: Key, alpha: float, prompt: str) -> float:
    """One prompt's p95 KL over its valid tokens."""
    arr, ids = s.kl(k, alpha), s.kl_prompts.get((k, alpha), [])
    if arr is None or prompt not in ids:
        return float("nan")
    row = arr[ids.index(prompt)]
    return P95.pooled(row[~np.isnan(row)])


def per_t_p95(s: Study, alpha: float) -> dict[Key, np.ndarray]:
    """cell -> [t] p95 over prompts of per-token KL at dose `alpha` (methods' cells and controls')."""
    return {k: np.array(P95.per_position(np.nan_to_num(a), ~np.isnan(a))) for (k, x), a in s.kl_arrays.items() if x == alpha}


def pooled_p95(s: Study, k: Key, alpha: float, T: int | None = None) -> float:
    """The statistic over a cell's held-out prompts and their first T tokens (all by default)."""
    arr = s.kl(k, alpha)
    if arr is None:
        return float("nan")
    arr = arr[:, :T]
    return P95.pooled(arr[~np.isnan(arr)])


def cumulative_p95(s: Study, k: Key, alpha: float) -> np.ndarray:
    """[t] the pooled statistic over the first t tokens: what the 1-nat target refers to at t = T."""
    arr = s.kl(k, alpha)
    return np.array([]) if arr is None else np.array([pooled_p95(s, k, alpha, t) for t in range(1, arr.shape[1] + 1)])


def mean_kl(s: Study, model, method, alpha, window=None) -> Estimate:
    """Mean KL per token (pooled over prompts and tokens), seeds as units."""

    def rows(keys):
        arrs = [a for k in keys if (a := s.kl(k, alpha)) is not None]
        if not arrs:
            return np.zeros((0, 2))
        return np.mean([np.stack([np.nansum(a, 1), (~np.isnan(a)).sum(1)], 1) for a in arrs], 0)

    return hierarchical(s.units(model, method, window, rows), stat=_per_item)


def seed_range(s: Study, model, method, window, value) -> tuple[float, float, float]:
    """(mean, min, max) over seeds of value(the seed's cell keys) (e.g. a pooled p95; its mean over cells)."""
    vals = [value(ks) for seed in s.seeds if (ks := s.keys(model, method, seed, window))]
    vals = [v for v in vals if not np.isnan(v)]
    return (float(np.mean(vals)), float(min(vals)), float(max(vals))) if vals else (float("nan"),) * 3


# ---- base NLL of the steered rollouts ------------------------------------------------------------------------


def _nll_rows(s: Study, keys: list[Key], alpha: float) -> np.ndarray:
    """[prompt 4]: steered NLL sum and tokens (mean over the cells), the base model's own sum and tokens."""
    base = s.nll.get((base_key(keys[0][0]), 0.0), {}) if keys else {}
    per = [s.nll.get((k, alpha), {}) for k in keys]
    prompts = sorted(set(base).intersection(*map(set, per))) if per else []
    return np.array([[np.mean([d[p][0] for d in per]), np.mean([d[p][1] for d in per]), *base[p]] for p in prompts]).reshape(
        -1, 4
    )


def cell_nll_ratios(s: Study, alpha: float) -> dict[Key, float]:
    """cell -> mean base NLL per token of its steered rollouts / the same for the base model's own rollouts."""
    out = {}
    for k, a in s.nll:
        if a == alpha and k[1] != BASE:
            rows = _nll_rows(s, [k], alpha)
            if len(rows) and rows[:, 1].sum() and rows[:, 3].sum():
                out[k] = float(_ratio(rows.sum(0)))
    return out


def nll_ratio(s: Study, model, method, alpha, window=None) -> Estimate:
    """Base NLL per token of the steered rollouts over the base model's own, seeds as units."""
    return hierarchical(s.units(model, method, window, lambda ks: _nll_rows(s, ks, alpha)), stat=_ratio)


def excess_nll(s: Study, model, method, alpha, window=None) -> Estimate:
    """Steered minus base NLL per token (nats), same prompts."""
    return hierarchical(s.units(model, method, window, lambda ks: _nll_rows(s, ks, alpha)), stat=_excess)


# ---- degeneration (distinct-3 of the held-out rollouts) ----------------------------------------------------------


def repetitive(s: Study, model, method, alpha, window=None) -> Estimate:
    """Share of held-out rollouts whose distinct-3 is below REPETITIVE (a loop), seeds as units; method BASE: the
    base model's own rollouts (one unit). A prompt's value in a seed is its mean over that seed's cells."""

    def rows(keys):
        per = [s.distinct.get((k, 0.0 if method == BASE else alpha), {}) for k in keys]
        prompts = sorted(set().union(*map(set, per))) if per else []
        return np.array([np.mean([d[p] < REPETITIVE for d in per if p in d]) for p in prompts])

    return hierarchical([rows([base_key(model)])] if method == BASE else s.units(model, method, window, rows))


# ---- target-axis logit -----------------------------------------------------------------------------------------


def _delta_rows(s: Study, keys: list[Key], alpha: float) -> np.ndarray:
    """[probe]: L(alpha) - L(base) per probe, the mean over the cells."""
    if not keys:
        return np.array([])
    base = s.target.get((base_key(keys[0][0]), 0.0), {})
    per = [s.target.get((k, alpha), {}) for k in keys]
    probes = sorted(set(base).intersection(*map(set, per)))
    return np.array([np.mean([d[p] for d in per]) - base[p] for p in probes])


def delta_logit(s: Study, model, method, alpha=1.0, window=None) -> Estimate:
    """Target-axis logit at the dose minus the base model's, per probe, seeds as units."""
    return hierarchical(s.units(model, method, window, lambda ks: _delta_rows(s, ks, alpha)))


def cell_delta_logit(s: Study, k: Key, alpha=1.0) -> Estimate:
    """One cell: mean over probes, probe-bootstrap 95% interval."""
    return hierarchical([_delta_rows(s, [k], alpha)])


def delta_vs_control(s: Study, model, method, control, alpha=1.0) -> Estimate:
    """The method's delta logit minus the control's, paired by seed and probe, in the control's windows."""
    units = []
    for seed in s.seeds:
        ctrl = s.keys(model, control, seed)
        mine = [k for k in s.keys(model, method, seed) if k[3] in {c[3] for c in ctrl}]
        if ctrl and mine:
            a, b = _delta_rows(s, mine, alpha), _delta_rows(s, ctrl, alpha)
            if len(a) == len(b):
                units.append(a - b)
    return hierarchical(units)


# ---- branch_pmass ------------------------------------------------------------------------------------------------


def _pmass_rows(s: Study, keys: list[Key], alpha: float) -> np.ndarray:
    """[question 4]: sum and count of the uncensored pmass values over the cells and forks; the base's."""
    if not keys:
        return np.zeros((0, 4))
    base = s.pmass.get((base_key(keys[0][0]), 0.0), {})
    per = [s.pmass.get((k, alpha), {}) for k in keys]
    rows = []
    for q in sorted(set(base).intersection(*map(set, per))):
        vals = np.array([v for d in per for v in d[q].values()])
        bv = np.array(list(base[q].values()))
        rows.append([np.nansum(vals), np.sum(~np.isnan(vals)), np.nansum(bv), np.sum(~np.isnan(bv))])
    return np.array(rows).reshape(-1, 4)


def _paired_rows(s: Study, keys: list[Key], alpha: float) -> np.ndarray:
    """[question 2]: sum and count of pmass(t) - pmass(0), same question, cell and dose, uncensored t >= 5."""
    per = [s.pmass.get((k, alpha), {}) for k in keys]
    rows = []
    for q in sorted(set().union(*map(set, per))) if per else []:
        diffs = [v - d[q][0] for d in per if q in d and 0 in d[q] for t, v in d[q].items() if t >= 5 and not np.isnan(v)]
        rows.append([float(np.sum(diffs)), len(diffs)])
    return np.array(rows).reshape(-1, 2)


def pmass_change(s: Study, model, method, alpha, window=None) -> Estimate:
    """Mean uncensored pmass at the dose minus the base model's, same questions, seeds as units."""
    return hierarchical(s.units(model, method, window, lambda ks: _pmass_rows(s, ks, alpha)), stat=_excess)


def pmass_paired(s: Study, model, method, alpha, window=None) -> Estimate:
    """pmass at fork t minus at fork 0 (same question, cell and dose; t >= 5), seeds as units."""
    return hierarchical(s.units(model, method, window, lambda ks: _paired_rows(s, ks, alpha)), stat=_per_item)


def cell_pmass_change(s: Study, k: Key, alpha: float) -> float:
    """One cell: mean uncensored pmass at the dose minus the base model's (v1's definition)."""
    rows = _pmass_rows(s, [k], alpha)
    return float(_excess(rows.sum(0))) if len(rows) else float("nan")


def pmass_curve(s: Study, model, method, alpha) -> dict[int, list[float]]:
    """fork t -> uncensored pmass values over the (model, method) cells (method BASE: the base model's)."""
    keys = [base_key(model)] if method == BASE else s.keys(model, method)
    out: dict[int, list[float]] = defaultdict(list)
    for k in keys:
        for forks in s.pmass.get((k, 0.0 if method == BASE else alpha), {}).values():
            for t, v in forks.items():
                if not np.isnan(v):
                    out[t].append(v)
    return dict(out)


def base_pmass(s: Study, model) -> float:
    """The base model's mean pmass over its scored forks."""
    vals = [v for vs in pmass_curve(s, model, BASE, 0.0).values() for v in vs]
    return float(np.mean(vals)) if vals else float("nan")


def pmass_counts(s: Study, model, method, alpha) -> int:
    """Scored (uncensored) forks of a (model, method) at a dose."""
    return sum(len(v) for v in pmass_curve(s, model, method, alpha).values())


def pmass_at(s: Study, model, method, alpha, t: int) -> tuple[Estimate, int]:
    """Mean uncensored pmass at fork t with its two-stage bootstrap interval (seeds, then questions), as Table 1's
    intervals, and the number of scored forks behind it; method BASE: the base model's questions (one unit)."""
    a = 0.0 if method == BASE else alpha

    def rows(keys):
        per = [s.pmass.get((k, a), {}) for k in keys]
        out = []
        for q in sorted(set().union(*map(set, per))):
            vals = [d[q][t] for d in per if q in d and t in d[q] and not np.isnan(d[q][t])]
            if vals:
                out.append([sum(vals), len(vals)])
        return np.array(out).reshape(-1, 2)

    units = [rows([base_key(model)])] if method == BASE else s.units(model, method, None, rows)
    n = int(sum(u[:, 1].sum() for u in units))
    return hierarchical(units, stat=_per_item), n


# ---- statistics of column sums ------------------------------------------------------------------------------------


def _per_item(s: np.ndarray) -> np.ndarray:
    """Column sums [sum, n] -> sum / n."""
    return s[..., 0] / s[..., 1]


def _ratio(s: np.ndarray) -> np.ndarray:
    """Column sums [steered sum, steered n, base sum, base n] -> (steered per token) / (base per token)."""
    return (s[..., 0] / s[..., 1]) / (s[..., 2] / s[..., 3])


def _excess(s: np.ndarray) -> np.ndarray:
    """Column sums [steered sum, steered n, base sum, base n] -> steered per item minus base per item."""
    return s[..., 0] / s[..., 1] - s[..., 2] / s[..., 3]
