"""Statistic: per-token KL values -> the calibration statistic, defined once (numpy only, no torch).

p95 = the 95th percentile (numpy's linear interpolation) of the KL values pooled over
prompts x tokens, positions after a row's EOS excluded (DESIGN.md s.3). Why p95: the
mean hides the few tokens where steering takes over the text; the max is one token's
accident. The same object gives the per-position quantile across prompts (history,
Figure 1), the early-stop rule of an overshooting dose, and the bound that rule reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TARGET = 1.0  # nats: the statistic at c* (DESIGN.md s.3)
TOL = 0.05  # converged: |statistic - TARGET| <= TOL


# two-sided 95% Student t quantiles t(0.975, df); beyond 30 degrees of freedom, a Cornish-Fisher expansion
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    z = 1.959964
    return _T975[df - 1] if df <= len(_T975) else z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """An interval for c* (`Statistic.crossing_interval`)."""

    lo: float
    hi: float
    level: float  # 0.95
    n_prompts: int
    open_ended: bool  # a bound reached the edge of the searched range (a factor e^1.5 past the evaluated doses)

    def describe(self) -> str:
        edge = "; a bound reaches the edge of the searched range" if self.open_ended else ""
        return f"{self.level:.0%} t-interval over the {self.n_prompts} calibration prompts (share of tokens above target){edge}"


@dataclass(frozen=True)
class Statistic:
    q: float = 0.95
    name: str = "p95 per-token KL(steered || base) nats, steered greedy rollout, base teacher-forced"

    def pooled(self, values) -> float:
        """The quantile of all values (a 1-D array of the valid KL values)."""
        values = np.asarray(values, dtype=np.float64)
        return float(np.quantile(values, self.q)) if values.size else float("nan")

    def per_position(self, kl: np.ndarray, valid: np.ndarray) -> list[float]:
        """kl, valid: [n t] -> [t] the quantile across prompts at each position (NaN where none is valid)."""
        return [self.pooled(kl[valid[:, t], t]) for t in range(kl.shape[1])]

    def must_exceed(self, m: int) -> int:
        """How many of at most m pooled values must be >= x for their quantile (linear) to be >= x."""
        return m - math.floor(self.q * (m - 1))

    def lower_bound(self, values, m: int) -> float:
        """The quantile's lower bound when only some of m values are known (a rollout stopped early): the
        `must_exceed(m)`-th largest known value."""
        return float(np.sort(np.asarray(values, dtype=np.float64))[-self.must_exceed(m)])

    def crossing_interval(self, doses: list[tuple[float, np.ndarray | None]], target: float) -> Interval:
        """A 95% interval for the c where the statistic of the prompts' population crosses `target`, from the
        KL values already measured at the evaluated doses (no model evaluation).

        The statistic equals the target exactly where the share of pooled KL values above the target is
        1 - q (5%), and that share is a ratio of sums over prompts: a prompt-level t-interval for it
        (ratio estimator, n - 1 degrees of freedom) at each c, inverted over a grid of c, bounds c*.
        Between evaluated doses each token's KL is scaled from the nearest evaluated dose along the local
        log-log slope of the statistic (measured between the two nearest evaluated doses, clamped to
        [0.5, 8] as in the solver; 2, the small-c law, with one dose). Doses whose rollout stopped early
        (kl None) are left out. Measured on a synthetic population (tests, docs/decisions.md): coverage
        0.93-0.96 for 8-32 prompts; with 4 prompts the interval is wide (about a factor 2 either way).
        """
        pts = sorted((c, kl) for c, kl in doses if kl is not None)
        n = pts[0][1].shape[0] if pts else 0
        if n < 2:
            return Interval(float("nan"), float("nan"), 0.95, n, False)
        xs = np.log([c for c, _ in pts])
        ys = np.log([max(self.pooled(kl[~np.isnan(kl)]), 1e-300) for _, kl in pts])
        grid = np.linspace(xs[0] - 1.5, xs[-1] + 1.5, 1201)  # log c, a factor e^1.5 beyond the evaluated doses
        nearest = np.argmin(np.abs(grid[:, None] - xs[None, :]), axis=1)
        share, sd = np.empty(len(grid)), np.empty(len(grid))
        for j, (_, kl) in enumerate(pts):
            slope = 2.0
            if len(xs) > 1:
                k = int(np.argsort(np.abs(xs - xs[j]))[1])
                slope = float(np.clip((ys[j] - ys[k]) / (xs[j] - xs[k]), 0.5, 8.0)) if xs[j] != xs[k] else 2.0
            g = np.flatnonzero(nearest == j)
            scaled = kl[None] * np.exp(slope * (grid[g] - xs[j]))[:, None, None]  # [g n t]
            above = (np.nan_to_num(scaled, nan=-np.inf) > target).sum(-1)  # [g n] per prompt
            tokens = (~np.isnan(kl)).sum(-1)  # [n]
            share[g] = above.sum(-1) / tokens.sum()
            resid = above - share[g, None] * tokens[None]  # ratio estimator, linearized per prompt
            sd[g] = np.sqrt(n / (n - 1) * (resid**2).sum(-1)) / tokens.sum()
        half = t975(n - 1) * sd
        inside = np.abs(share - (1 - self.q)) <= half
        if not inside.any():
            return Interval(float("nan"), float("nan"), 0.95, n, False)
        lo, hi = np.flatnonzero(inside)[[0, -1]]
        open_ended = bool(lo == 0 or hi == len(grid) - 1)
        return Interval(float(np.exp(grid[lo])), float(np.exp(grid[hi])), 0.95, n, open_ended)

    def prompt_interval(self, kl: np.ndarray, level: float = 0.90, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """kl: [n t] per-token KL, NaN where not scored -> a percentile bootstrap interval for the pooled
        statistic of the prompts' population: resample the n prompts with replacement (each keeps all its
        tokens), pool, take the quantile; `level` of the resampled values lie inside (numpy, seeded)."""
        kl = np.asarray(kl, dtype=np.float64)
        rows = [r[~np.isnan(r)] for r in kl]
        rows = [r for r in rows if r.size]
        if len(rows) < 2:
            return float("nan"), float("nan")
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(rows), size=(resamples, len(rows)))
        stats = np.array([self.pooled(np.concatenate([rows[i] for i in pick])) for pick in picks])
        lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    @staticmethod
    def stop_above(target: float, tol: float) -> float:
        """A dose is cut short once its statistic must exceed this: far enough above the target that the
        solver needs only the bound, not the value (near the target it needs values to interpolate)."""
        return max(target + tol, 1.5 * target)


P95 = Statistic()
