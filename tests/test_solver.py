"""The iso-KL solver on analytic p95(c) curves: few evaluations, honest failure."""

import math

import pytest

from isokl.calibrate import solve

CURVES = {
    "quadratic": lambda c: (c / 3.0) ** 2,
    "saturating": lambda c: 3.0 * (1 - math.exp(-((c / 4.0) ** 2))),
    "flat_steps": lambda c: math.floor((c / 2.2) ** 2 * 5) / 5 + 0.03 * (c / 2.2),
    "wiggle": lambda c: (c / 3.0) ** 2 * (1 + 0.3 * math.sin(6 * math.log(c))),
    "steep_far": lambda c: (c / 300.0) ** 3,
    "small_scale": lambda c: (c / 1e-3) ** 1.5,
}


@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("c0", [0.05, 1.0, 20.0])
def test_reaches_target_within_8_evaluations(name, c0):
    f = CURVES[name]
    s = solve(f, target=1.0, tol=0.05, c0=c0)
    assert s.status == "converged", (s.status, s.history)
    assert abs(f(s.c) - 1.0) <= 0.05
    assert s.value == f(s.c)  # reports the statistic at the returned c, not at the last step
    assert len(s.history) <= 8, s.history
    assert len({c for c, _ in s.history}) == len(s.history)  # never the same c twice


@pytest.mark.parametrize("c0", [0.1, 1.0, 50.0])
def test_unreachable_target_is_reported(c0):
    f = lambda c: 0.8 * (1 - math.exp(-c))
    s = solve(f, target=1.0, c0=c0, c_max=1e4)
    assert s.status == "unreachable" and not s.converged
    assert len(s.history) <= 12


def test_jump_across_target_is_not_called_converged():
    f = lambda c: 0.5 if c < 2.345 else 1.5
    s = solve(f, c0=1.0, max_evals=30)
    assert s.status == "not_converged"
    assert abs(s.c - 2.345) / 2.345 < 0.01  # it located the jump


def test_nan_statistic_raises():
    with pytest.raises(FloatingPointError):
        solve(lambda c: float("nan"))
