"""Inference: per-seed samples -> means with intervals that treat seeds as the units (numpy only, no torch).

A study mean pools cells; cells of one seed are not independent (the T = 20 and T = 50
cells of a seed share its vector, and every cell uses the same probes). `hierarchical`
resamples in two stages: first the seeds, with replacement; then, inside each drawn
seed, its probes (prompts, questions), with replacement. The statistic of a resample is
the mean over drawn seeds of the mean over that seed's drawn probes, so the interval
carries both the seed-to-seed and the probe-to-probe variation. With 3 seeds the first
stage has only 10 distinct draws: the interval is coarse, and says so by its width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float  # mean over seeds of the per-seed mean
    lo: float
    hi: float
    n_units: int  # seeds
    n_values: int  # probe values over all seeds

    def excludes(self, x: float = 0.0) -> bool:
        return self.lo > x or self.hi < x


def hierarchical(
    units: list[np.ndarray],
    stat: Callable[[np.ndarray], np.ndarray] | None = None,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """units: one array per seed, [n] per-probe values or [n m] per-probe columns -> the mean over seeds of the
    seed's statistic, and the percentile interval of the two-stage bootstrap (seeds, then probes within each drawn
    seed). stat maps a seed's column sums [..., m] (over its probes) to its statistic, e.g. a ratio of sums; by
    default the mean of the values."""
    units = [np.asarray(u, dtype=np.float64) for u in units if np.size(u)]
    if not units:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    units = [u[:, None] if u.ndim == 1 else u for u in units]

    def of(sums: np.ndarray, n: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty group (e.g. no scored fork): NaN, said plainly
            return stat(sums) if stat is not None else sums[..., 0] / n

    mean = float(np.mean([of(u.sum(0), len(u)) for u in units]))
    rng = np.random.default_rng(seed)
    s = len(units)
    drawn = rng.integers(0, s, size=(resamples, s))  # stage 1: which seed fills each of the s places
    total = np.zeros(resamples)
    for j in range(s):
        for u, vals in enumerate(units):
            rows = np.flatnonzero(drawn[:, j] == u)
            if rows.size:  # stage 2: that seed's probes, resampled
                picks = rng.integers(0, len(vals), size=(rows.size, len(vals)))
                total[rows] += of(vals[picks].sum(1), len(vals))
    stats = total / s
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(mean, float(lo), float(hi), s, int(sum(len(u) for u in units)))
