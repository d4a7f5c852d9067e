"""Solver: the pure search for c* (no torch, no model): a generator that proposes doses and reads back the statistic
at each, so one driver can run it for one vector (`calibrate.calibrate_iso_kl`) or many in one batch per round
(`calibrate.calibrate_many`), and `solve` runs it on any function.

Solver (`solve`): in (x, y) = (log c, log p95 - log target), where p95 ~ k c^2 at small
c is a straight line of slope 2. Unbracketed: extrapolate along the measured slope
(2 before there is a second point), at most x100 a step. Bracketed: false position
with the Illinois rule (halve the *residual* y of an endpoint kept twice, never the
value p95 itself: DESIGN.md s.7), kept strictly inside the bracket. Stops as soon as
|p95 - target| <= tol; a c is never evaluated twice; a target that c_max cannot reach
(or a jump that no c hits) is reported as such, never as a silent edge value.

A jump: few prompts make p95(c) a step function (a greedy token flips at some c and the pooled tail moves with it).
Once the bracket is narrower than a smooth curve could cross the tolerance band in (`jump_width`), the solver stops
with status "jump", returns the side below the target and says why in `note`, instead of bisecting the step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from .statistic import TARGET, TOL


@dataclass(frozen=True)
class Solve:
    c: float  # the returned coefficient (converged point, else the closest evaluated one)
    value: float  # f(c): the statistic at the returned c, not at the last step
    status: str  # converged | unreachable | not_converged | jump
    history: tuple[tuple[float, float], ...]  # (c, f(c)) in evaluation order
    note: str = ""  # status jump: the bracket, the two values, the cause, the fix

    @property
    def converged(self) -> bool:
        return self.status == "converged"


MAX_SLOPE = 8.0  # the steepest d log f / d log c the solver believes of a smooth curve (`_slope` clamps to it)


def jump_width(target: float, tol: float) -> float:
    """The narrowest bracket (in log c) a smooth f with slope <= MAX_SLOPE needs to go from below target - tol to above
    target + tol: log((target + tol) / (target - tol)) / MAX_SLOPE (0.0125, 1.3% of c, at 1 +- 0.05). A bracket
    narrower than this whose ends are both outside the band holds a jump, not a crossing. (A 2% rule was tried and
    taken back: a curve that creeps into the band and then steps out of it was called a jump 1.6% wide, with an
    in-band dose one evaluation away; docs/decisions.md, "The jump width stays at MAX_SLOPE's".)"""
    return math.log((target + tol) / max(target - tol, 1e-12 * target)) / MAX_SLOPE


def jump_note(a: tuple[float, float], b: tuple[float, float], target: float, tol: float) -> str:
    """One line for a jump between (c, f) points a < b: the bracket, the two values, the likely cause and the fix."""
    (ca, va), (cb, vb) = a, b
    return (
        f"p95 jumps from {va:.3g} to {vb:.3g} between c = {ca:.5g} and {cb:.5g} ({100 * (cb / ca - 1):.2g}% apart): a "
        f"greedy token flips there, so no c gives {target:g} +- {tol:g} on these prompts; returned the side below the "
        "target (the dose stays within the budget). Fix: more calibration prompts (add_library_prompts=16 adds the "
        "library's)"
    )


def solve(f: Callable, *, batched: bool = False, **options) -> Solve:
    """Find c > 0 with |f(c) - target| <= tol for an increasing-ish f with f(0) = 0.

    f: c -> value, or (batched=True) a list of doses -> list of values, one round per call.
    options: `solver`'s (target, tol, c0, c_max, c_min, max_evals, slope0, per_round). per_round > 1
    evaluates that many doses per round around the same proposal, spread to bracket early (wide
    steps) and to land inside the tolerance late (tight steps).
    """
    F = f if batched else (lambda cs: [f(c) for c in cs])
    rounds = solver(**options)
    try:
        cs = next(rounds)
        while True:
            cs = rounds.send([float(v) for v in F(cs)])
    except StopIteration as end:
        return end.value


def solver(
    *,
    target: float = TARGET,
    tol: float = TOL,
    c0: float = 1.0,
    c_max: float = 1e4,
    c_min: float = 1e-8,
    max_evals: int = 20,
    slope0: float = 2.0,
    per_round: int = 1,
    known: Sequence[tuple[float, float]] = (),
) -> Generator[list[float], list[float], Solve]:
    """The solver as a generator, so that one driver can run many in lockstep (`calibrate_many`) and one can run
    alone (`solve`): it yields each round's doses, is sent their values, and returns the Solve (StopIteration.value).
    c0: the first dose; c_min, c_max: the range searched; max_evals: evaluations at most; slope0: the assumed slope
    of log f on log c before there are two points; per_round: doses per round. known: (c, f(c)) points already
    measured (the same vector's evaluations for another target): read as a first round before anything is proposed,
    so they bracket or converge for free (c0 is then unused); they lead the history and do not count in max_evals."""
    if not (c_min < c0 < c_max) or target <= 0 or tol <= 0 or per_round < 1:
        raise ValueError(f"need c_min < c0 < c_max, target > 0, tol > 0, per_round >= 1 (got {c0=}, {target=}, {tol=})")
    hist: list[tuple[float, float]] = []
    pts: list[tuple[float, float]] = []  # (x, y) = (log c, log(f / target)); y = -inf where f = 0
    value_at: dict[float, float] = {}  # x -> f
    scale = {"lo": 1.0, "hi": 1.0}  # Illinois factors on the endpoint residuals
    last_side = None
    widths: list[float] = []  # bracket width after each bracketed round
    x_lo, x_hi = math.log(c_min), math.log(c_max)

    def done(status: str) -> Solve:
        best = min(reversed(hist), key=lambda h: abs(h[1] - target))  # ties: the latest, nearest the crossing
        return Solve(best[0], best[1], status, tuple(hist))

    x, spread = math.log(c0), math.log(4.0)
    given = sorted((float(c), float(v)) for c, v in known if c > 0)
    n_known = len(given)
    while len(hist) - n_known < max_evals:
        if given:  # the known points, read as the first round (their c kept exactly: the driver's keys)
            cs, vals, given = [c for c, _ in given], [v for _, v in given], []
            xs = [round(math.log(c), 12) for c in cs]
        else:
            k = min(per_round, max_evals - (len(hist) - n_known))
            xs = [min(max(x + spread * (j - (k - 1) / 2), x_lo), x_hi) for j in range(k)] if k > 1 else [x]
            xs = sorted({round(v, 12) for v in xs if all(abs(v - px) > 1e-12 for px, _ in pts)})
            if not xs:
                return done("not_converged")  # never evaluate the same c twice
            cs = [math.exp(v) for v in xs]
            vals = yield cs
        for xv, c, v in zip(xs, cs, vals, strict=True):
            if math.isnan(v):
                raise FloatingPointError(f"the statistic is NaN at c = {c:g}")
            hist.append((c, v))
            value_at[xv] = v
            pts.append((xv, math.log(v / target) if v > 0 else -math.inf))
        hits = [(c, v) for c, v in hist[-len(xs) :] if abs(v - target) <= tol]
        if hits:
            c, v = min(hits, key=lambda h: abs(h[1] - target))
            return Solve(c, v, "converged", tuple(hist))
        y = pts[-len(xs) + (len(xs) - 1) // 2][1]  # the round's central point drives the Illinois rule
        side = "lo" if y < 0 else "hi"
        if side == last_side:  # the opposite endpoint was kept again: halve its residual
            scale["hi" if side == "lo" else "lo"] *= 0.5
        else:
            scale = {"lo": 1.0, "hi": 1.0}
        last_side = side
        ordered = sorted(pts)
        crossings = [(a, b) for a, b in itertools.pairwise(ordered) if (a[1] < 0) != (b[1] < 0)]
        if crossings:  # bracketed; with a non-monotone f, take the crossing at the smallest c
            (xa, ya), (xb, yb) = crossings[0]
            w = xb - xa
            va, vb = value_at[xa], value_at[xb]
            outside = min(va, vb) < target - tol and max(va, vb) > target + tol
            if w < jump_width(target, tol) and outside:
                below = (math.exp(xa), va) if va < target else (math.exp(xb), vb)
                note = jump_note((math.exp(xa), va), (math.exp(xb), vb), target, tol)
                return Solve(below[0], below[1], "jump", tuple(hist), note)
            if w < 1e-3:
                return done("not_converged")  # f jumps across the target within 0.1% of c: no c hits it
            widths.append(w)
            if len(widths) >= 3 and w > 0.5 * widths[-3]:
                x = xa + 0.5 * w  # false position stalled (flat or stepped f): bisect
            else:
                ya_eff, yb_eff = (_eff(v, scale) for v in (ya, yb))
                x = xa - ya_eff * w / (yb_eff - ya_eff)
                x = min(max(x, xa + 0.02 * w), xb - 0.02 * w)  # strictly inside the bracket
            slope = abs(yb - ya) / w if not math.isinf(ya) else slope0
            # next round's doses ~1.5 tolerance-widths apart, all inside the bracket
            spread = min(1.5 * (tol / target) / max(slope, 0.5), w / (per_round + 1))
        elif all(p[1] < 0 for p in pts):  # only points below the target: go up
            xl, yl = max(pts)
            if xl >= x_hi - 1e-12:
                return done("unreachable")
            slope = _slope(pts, slope0)
            # a flat (saturating) curve gets decade steps, so an unreachable target is found in a few evaluations
            step = math.log(10.0) if math.isinf(yl) or slope < 0.5 else min(max(-yl / slope, math.log(1.05)), math.log(100.0))
            x, spread = min(xl + step, x_hi), math.log(2.0)
        else:  # only points above the target: come down
            xh, yh = min(pts)
            if xh <= x_lo + 1e-12:
                return done("unreachable")
            slope = max(_slope(pts, slope0), 0.5)
            x, spread = max(xh - min(max(yh / slope, math.log(1.05)), math.log(100.0)), x_lo), math.log(2.0)
    return done("not_converged")


def _eff(y: float, scale: dict[str, float]) -> float:
    """Residual used for interpolation: Illinois-scaled; -inf (f = 0) as a large finite negative."""
    return -1e3 * scale["lo"] if math.isinf(y) else y * scale["lo" if y < 0 else "hi"]


def _slope(points: list[tuple[float, float]], default: float) -> float:
    """Local slope of log f vs log c from the two points nearest the target (all on one side), clamped to [0, 8]."""
    pts = sorted(sorted((p for p in points if not math.isinf(p[1])), key=lambda p: abs(p[1]))[:2])
    if len(pts) < 2 or pts[1][0] == pts[0][0]:
        return default
    s = (pts[1][1] - pts[0][1]) / (pts[1][0] - pts[0][0])
    return min(max(s, 0.0), 8.0)
