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

    @staticmethod
    def stop_above(target: float, tol: float) -> float:
        """A dose is cut short once its statistic must exceed this: far enough above the target that the
        solver needs only the bound, not the value (near the target it needs values to interpolate)."""
        return max(target + tol, 1.5 * target)


P95 = Statistic()
