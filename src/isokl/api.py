"""The judge from Python: calibrated vectors -> their ranked effect, damage and control floor (`report.leaderboard.Board`).

    res = isokl.calibrate_many(lm, [*vecs, *ctrl.values()], prompts, T=20)       # ctrl = judge.control_vectors(...)
    board = isokl.judge(lm, res.results[: len(vecs)], concept, controls=res.results[len(vecs) :])
    for e in board.at(1.0): print(e.name, e.concept, e.concept_vs_control, e.excess_nll)

It composes the layers (it sits on top of them, as `cli` does): `study.judge` computes the rows, `report.leaderboard`
ranks them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core.calibrate import CalibrationResult
from .core.concept import Concept
from .core.models import LM
from .report.leaderboard import Board, board
from .study import judge as _judge


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
