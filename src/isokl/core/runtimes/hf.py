"""The transformers runtime: every dose's rollouts and KL from the model isokl holds (torch, any dtype and device).

`solve` runs every job's solver to its end, each round one batched rollout of the next doses of every vector still
solving (`rollout.rollout_many`), fed from the nearest evaluated doses' tokens where every vector has some (`draft`);
`measure` is one vector's rollout at alpha x c*.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..formats.vector import Vector
from ..model.models import LM
from .registry import Job, Runtime, register
from .rollout import prefill_base, rollout, rollout_many

DRAFT_RATIO = 1.25


def nearest_draft(done: dict[float, tuple[torch.Tensor, int]], cs: list[float]) -> torch.Tensor | None:
    """Draft tokens [len(cs) * n, n_draft] for the coefficients cs: for each, the rollout of the nearest evaluated dose in
    log c; None if some dose has none within DRAFT_RATIO (a far dose's text differs within a few tokens and
    the verifying pass would be wasted). n_draft = the shortest of the chosen rollouts."""
    if not done:
        return None
    picks = []
    for c in cs:
        near = min(done, key=lambda e: abs(math.log(e / c)))
        if abs(math.log(near / c)) > math.log(DRAFT_RATIO):
            return None
        picks.append(done[near])
    n_draft = min(steps for _, steps in picks)
    return torch.cat([tok[:, :n_draft] for tok, _ in picks]) if n_draft > 0 else None


@dataclass(frozen=True)
class Round:
    """One batched evaluation of a joint calibration: the vectors in it (by index), its doses, batch rows and time."""

    vectors: tuple[int, ...]
    doses: int
    rows: int  # steered rows + their base twins
    steps: int  # decode steps run (< T where every row ended or stopped early)
    seconds: float
    drafted: bool = False  # fed from the nearest evaluated doses' tokens (`rollout`, draft=)


def solve(
    lm: LM, jobs: list[Job], seqs: list[list[int]], T: int, *, stop, report, draft: bool = True, **_
) -> tuple[dict[str, str], list[Round]]:
    """Every job's solver to its end, each round one batched rollout of the next doses of every vector still solving
    (`rollout_many`), fed from the nearest evaluated doses' tokens where every vector has some -> the rounds."""
    base = prefill_base(lm, seqs)  # the base twins' prompts: the same in every evaluation and for every vector
    rounds: list[Round] = []
    with torch.inference_mode():
        while live := [j for j, job in enumerate(jobs) if job.pending]:
            t1 = time.time()
            doses = [jobs[j].pending for j in live]
            guesses = [nearest_draft(jobs[j].tokens, jobs[j].pending) if draft else None for j in live]
            guess = None
            # A draft feeds the whole batch ahead only while every row holds to it: used when every vector has one.
            # (Two batches, drafted and not, measured slower on CPU: docs/decisions.md.)
            if all(g is not None for g in guesses):
                width = min(int(g.shape[1]) for g in guesses if g is not None)
                guess = torch.cat([g[:, :width] for g in guesses if g is not None])
            vecs = [jobs[j].vector for j in live]
            ro = rollout_many(lm, seqs, T, vecs, doses, stop_above=stop, draft=guess, base=base, check_finite=False)
            secs = time.time() - t1
            rounds.append(
                Round(tuple(live), sum(len(d) for d in doses), 2 * ro.tokens.shape[0], ro.steps, secs, guess is not None)
            )
            for b, j in enumerate(live):
                _take(jobs[j], j, ro, b, secs, report)
    return {"dtype": dtype_of(lm)}, rounds  # what each Calibration records


def _take(job: Job, j: int, ro, b: int, secs: float, progress) -> None:
    """Vector j's doses (block b of the rollout) -> its stats, tokens for drafts, progress; its solver's next round."""
    bad = ro.nonfinite(b)
    if bad is not None:
        job.fail(f"{job.vector.label}: {bad}")
        return
    out = [ro.stats(k) for k in ro.layout.doses(b)]
    for k, s in zip(ro.layout.doses(b), out, strict=True):
        job.tokens[s.c] = (ro.tokens[ro.rows(k)], ro.steps)
        job.stats[s.c] = s
        if progress is not None:
            progress(j, s, secs)
    job.tell([s.p95 for s in out])


def measure(lm: LM, vector: Vector, seqs: list[list[int]], T: int, alpha: float, **_):
    """`vector` at alpha x c* rolled out in transformers -> (KLStats, the weights' dtype, no weights file)."""
    st = rollout(lm, seqs, T, vector, (alpha * vector.coeff,)).stats(0)
    return st, dtype_of(lm), ""


def dtype_of(lm: LM) -> str:
    return str(next(lm.model.parameters()).dtype).removeprefix("torch.")


TRANSFORMERS = register(
    Runtime(
        name="transformers",
        summary="the model isokl holds, in torch (any dtype and device)",
        installed=lambda: None,
        solve=solve,
        measure=measure,
        judged=True,
        torch_dtype=True,
    )
)
