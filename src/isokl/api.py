"""The verbs that compose layers, from Python: `check` (a calibrated vector on your prompts -> `CheckResult`, what
`isokl check` prints) and `judge` (calibrated vectors -> their ranked effect, damage and control floor,
`report.leaderboard.Board`).

    r = isokl.check(lm, vector, prompts)                                          # held-out p95, interval, R1's band
    print(r.p95, (r.lo, r.hi), r.in_band)

    res = isokl.calibrate_many(lm, [*vecs, *ctrl.values()], prompts, T=20)       # ctrl = judge.control_vectors(...)
    board = isokl.judge(lm, res.results[: len(vecs)], concept, controls=res.results[len(vecs) :])
    for e in board.at(1.0): print(e.name, e.concept, e.concept_vs_control, e.excess_nll)

It composes the layers (it sits on top of them, as `cli` does): `study.judge` computes the rows, `report.leaderboard`
ranks them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .core.calibrate import CalibrationResult
from .core.concept import Concept
from .core.models import LM
from .core.prompts import Prompt
from .core.vector import Vector
from .report.leaderboard import Board, board
from .report.thresholds import HOLDOUT_BAND
from .study import judge as _judge


@dataclass(frozen=True)
class CheckResult:
    """A calibrated vector at alpha x c* on held-out prompts: the statistic, its interval and R1's verdict."""

    alpha: float
    c: float
    window: int  # T, tokens per prompt
    n_prompts: int
    p95: float  # pooled p95 per-token KL(steered || base), nats
    lo: float  # its 90% prompt-bootstrap interval
    hi: float
    max: float
    n_values: int  # scored tokens
    prompt_p95: tuple[float, ...]  # each prompt's own p95
    target: float  # the vector's calibration target
    band: tuple[float, float]  # R1's held-out band
    dtype: str  # the model's weights during the check

    @property
    def in_band(self) -> bool:
        return self.band[0] <= self.p95 <= self.band[1]

    @property
    def interval_overlaps_band(self) -> bool:
        return self.lo <= self.band[1] and self.hi >= self.band[0]

    @property
    def above_target(self) -> int:
        """Prompts whose own p95 exceeds the target."""
        return sum(v > self.target for v in self.prompt_p95 if not math.isnan(v))


def check(lm: LM, vector: Vector, prompts: Sequence[Prompt], window: int | None = None, alpha: float = 1.0) -> CheckResult:
    """C1 for one vector: the held-out p95 of `vector` at alpha x c* on `prompts` (T = `window`, default the vector's
    calibration window), with its 90% prompt-bootstrap interval and the verdict against R1's band."""
    import numpy as np

    from .core.rollout import rollout
    from .core.statistic import P95

    cal = vector.calibration
    if cal is None:
        raise ValueError("this vector is not calibrated: run isokl.calibrate_iso_kl (or `isokl calibrate`) first")
    if len(prompts) < 2:
        raise ValueError(f"check needs at least 2 prompts for its interval, got {len(prompts)}")
    vector.check_fits(lm.id, lm.n_layers, lm.d_model)
    T = window or cal.window
    c = alpha * vector.coeff
    st = rollout(lm, lm.encode([lm.format(p) for p in prompts]), T, vector, (c,)).stats(0)
    kl = st.per_prompt
    assert kl is not None
    lo, hi = P95.prompt_interval(kl, level=0.90)
    own = tuple(P95.pooled(row[~np.isnan(row)]) if (~np.isnan(row)).any() else math.nan for row in kl)
    dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    return CheckResult(alpha, c, T, len(prompts), st.p95, lo, hi, st.max, st.n_values, own, cal.target, HOLDOUT_BAND, dtype)


def judge(
    lm: LM,
    results: Sequence[CalibrationResult],
    concept: Concept,
    *,
    alphas: Sequence[float] = (1.0,),
    controls: Sequence[CalibrationResult] = (),
    horizon: int = _judge.HORIZON,
    pmass: bool = False,
    seed: int | None = None,
) -> Board:
    """Each calibrated vector at alpha x c* on the concept's held-out sets, in one batch, ranked (docs/decisions.md,
    "The judge"); controls: calibrated random-direction vectors, matched to the vectors by their layers."""
    by_layers = {c.vector.layers: c for c in controls}
    judged = _judge.judge(lm, results, concept, alphas=alphas, controls=by_layers, horizon=horizon, pmass=pmass, seed=seed)
    return board(judged.rows, judged.record)
