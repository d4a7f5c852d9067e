"""Calibrate: Vector + calibration prompts -> the dose c* whose p95 per-token KL is the target (1 nat).

Statistic (DESIGN.md s.3): per-token KL(p_steered || p_base) along the steered greedy
rollout of each prompt, pooled over N prompts x T tokens, 95th percentile. Why p95:
the mean hides the few tokens where steering takes over the text; the max is one
token's accident. Why greedy: the rollout is then a function of c, so p95(c) is too.

Solver (`solve`): in (x, y) = (log c, log p95 - log target), where p95 ~ k c^2 at small
c is a straight line of slope 2. Unbracketed: extrapolate along the measured slope
(2 before there is a second point), at most x100 a step. Bracketed: false position
with the Illinois rule (halve the *residual* y of an endpoint kept twice, never the
value p95 itself: DESIGN.md s.7), kept strictly inside the bracket. Stops as soon as
|p95 - target| <= tol; a c is never evaluated twice; a target that c_max cannot reach
(or a jump that no c hits) is reported as such, never as a silent edge value.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .methods import get_method
from .models import LM
from .prompts import Prompt, prompt_hash
from .rollout import KLStats, evaluate
from .vector import Calibration, Vector

STATISTIC = "p95 per-token KL(steered || base) nats, steered greedy rollout, base teacher-forced"


@dataclass(frozen=True)
class Solve:
    c: float  # the returned coefficient (converged point, else the closest evaluated one)
    value: float  # f(c): the statistic at the returned c, not at the last step
    status: str  # converged | unreachable | not_converged
    history: tuple[tuple[float, float], ...]  # (c, f(c)) in evaluation order

    @property
    def converged(self) -> bool:
        return self.status == "converged"


def solve(
    f: Callable[[float], float],
    target: float = 1.0,
    tol: float = 0.05,
    c0: float = 1.0,
    c_max: float = 1e4,
    c_min: float = 1e-8,
    max_evals: int = 20,
    slope0: float = 2.0,
) -> Solve:
    """Find c > 0 with |f(c) - target| <= tol for an increasing-ish f with f(0) = 0."""
    if not (c_min < c0 < c_max) or target <= 0 or tol <= 0:
        raise ValueError(f"need c_min < c0 < c_max, target > 0, tol > 0 (got {c0=}, {target=}, {tol=})")
    hist: list[tuple[float, float]] = []
    lo: list[tuple[float, float]] = []  # points below target, (x, y)
    hi: list[tuple[float, float]] = []  # points above target
    scale = {"lo": 1.0, "hi": 1.0}  # Illinois factors on the endpoint residuals
    last_side = None
    widths: list[float] = []  # bracket width after each bracketed step

    def done(status: str) -> Solve:
        best = min(reversed(hist), key=lambda h: abs(h[1] - target))  # ties: the latest, nearest the crossing
        return Solve(best[0], best[1], status, tuple(hist))

    x = math.log(c0)
    while len(hist) < max_evals:
        c = math.exp(x)
        v = float(f(c))
        if math.isnan(v):
            raise FloatingPointError(f"the statistic is NaN at c = {c:g}")
        hist.append((c, v))
        if abs(v - target) <= tol:
            return Solve(c, v, "converged", tuple(hist))
        y = math.log(v / target) if v > 0 else -math.inf
        side = "lo" if y < 0 else "hi"
        (lo if side == "lo" else hi).append((x, y))
        if side == last_side:  # the opposite endpoint was kept again: Illinois halves its residual
            scale["hi" if side == "lo" else "lo"] *= 0.5
        else:
            scale = {"lo": 1.0, "hi": 1.0}
        last_side = side
        pts = sorted(lo + hi)
        crossings = [(a, b) for a, b in zip(pts, pts[1:]) if (a[1] < 0) != (b[1] < 0)]
        if crossings:  # bracketed; with a non-monotone f, take the crossing at the smallest c
            (xa, ya), (xb, yb) = crossings[0]
            w = xb - xa
            if w < 1e-3:
                return done("not_converged")  # p95 jumps across the target within 0.1% of c: no c hits it
            widths.append(w)
            if len(widths) >= 3 and w > 0.5 * widths[-3]:
                x = xa + 0.5 * w  # false position stalled (flat or stepped f): bisect
            else:
                ya_eff, yb_eff = (_eff(y, scale) for y in (ya, yb))
                x = xa - ya_eff * w / (yb_eff - ya_eff)
                x = min(max(x, xa + 0.02 * w), xb - 0.02 * w)  # strictly inside the bracket
        elif not hi:
            xl, yl = max(lo)
            if xl >= math.log(c_max) - 1e-12:
                return done("unreachable")
            slope = _slope(lo, slope0)
            # a flat (saturating) curve gets decade steps, so an unreachable target is found in a few evaluations
            step = math.log(10.0) if math.isinf(yl) or slope < 0.5 else min(max(-yl / slope, math.log(1.05)), math.log(100.0))
            x = min(xl + step, math.log(c_max))
        else:  # only points above the target: come down
            xh, yh = min(hi)
            if xh <= math.log(c_min) + 1e-12:
                return done("unreachable")
            slope = max(_slope(hi, slope0), 0.5)
            step = min(max(yh / slope, math.log(1.05)), math.log(100.0))
            x = max(xh - step, math.log(c_min))
        if any(abs(x - math.log(hc)) < 1e-12 for hc, _ in hist):
            return done("not_converged")  # never evaluate the same c twice
    return done("not_converged")


def _eff(y: float, scale: dict[str, float]) -> float:
    """Residual used for interpolation: Illinois-scaled; -inf (f = 0) as a large finite negative."""
    return -1e3 * scale["lo"] if math.isinf(y) else y * scale["lo" if y < 0 else "hi"]


def _slope(points: list[tuple[float, float]], default: float) -> float:
    """Local slope of log f vs log c from the two nearest finite points on one side, clamped to [0, 8]."""
    pts = sorted(p for p in points if not math.isinf(p[1]))[-2:]
    if len(pts) < 2 or pts[1][0] == pts[0][0]:
        return default
    s = (pts[1][1] - pts[0][1]) / (pts[1][0] - pts[0][0])
    return min(max(s, 0.0), 8.0)


@dataclass(frozen=True)
class CalibrationResult:
    vector: Vector  # the input vector with `calibration` filled in
    c_star: float
    p95: float  # at c*
    converged: bool
    status: str
    evaluations: int
    history: tuple[KLStats, ...]  # every evaluation: c, pooled stats, per_t_p95 / per_t_max of length T
    seconds: float


def calibrate_iso_kl(
    lm: LM,
    vector: Vector,
    prompts: list[Prompt],
    T: int = 20,
    target: float = 1.0,
    tol: float = 0.05,
    max_evals: int = 20,
    c_max: float | None = None,
    progress: bool = True,
) -> CalibrationResult:
    """Bracket then root-find c so that the pooled p95 KL over N prompts x T tokens equals `target`."""
    t0 = time.time()
    seqs = lm.encode([lm.format(p) for p in prompts])
    stats: dict[float, KLStats] = {}

    def f(c: float) -> float:
        t1 = time.time()
        (s,) = evaluate(lm, seqs, vector, (c,), T)
        stats[c] = s
        if progress:
            print(
                f"  eval {len(stats):2d}: c = {c:10.4g}  p95 = {s.p95:8.4f}  ({time.time() - t1:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        return s.p95

    c0 = get_method(vector.method).initial_coeff(vector.resid_norm)
    c_max = c_max if c_max is not None else max(1e3, 100.0 * vector.resid_norm)
    with torch.inference_mode():
        sol = solve(f, target=target, tol=tol, c0=c0, c_max=c_max, max_evals=max_evals)
    cal = Calibration(
        coeff=sol.c,
        target=target,
        statistic=STATISTIC,
        window=T,
        prompt_hash=prompt_hash(prompts),
        converged=sol.converged,
        status=sol.status,
        p95=sol.value,
        evaluations=len(sol.history),
        n_prompts=len(prompts),
    )
    return CalibrationResult(
        vector=vector.calibrated(cal),
        c_star=sol.c,
        p95=sol.value,
        converged=sol.converged,
        status=sol.status,
        evaluations=len(sol.history),
        history=tuple(stats[c] for c, _ in sol.history),
        seconds=time.time() - t0,
    )
