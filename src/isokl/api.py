"""The library's verbs, composed from the layers: what a notebook calls and what `isokl calibrate|check|generate`
call and print. Every verb takes an `LM` or the `(model, tokenizer)` you loaded yourself, plain strings (or chat
message lists) and any vector (`core.interop.as_vector`).

    lm = isokl.LM.wrap(model, tokenizer)                  # or pass (model, tokenizer) to any verb
    vec = isokl.extract(lm, [("I love it", "I hate it"), ...], "mean_diff")
    res = isokl.calibrate_iso_kl(lm, vec, ["Tell me about your weekend.", ...])   # c*, interval, p95, converged
    with isokl.steer(model, res.vector): model.generate(...)                     # at c* (alpha = 1)
    grid = isokl.calibrate(lm, [vec_a, vec_b], prompts, controls=True)           # jointly, a random floor per layer set
    board = isokl.judge(lm, grid)                                                 # ranked effect and damage, held out
    isokl.check(lm, res.vector, other_prompts)                                    # held-out p95, interval, R1's verdict
    isokl.generate(lm, res.vector, "Tell me about your weekend.")                 # base and steered, per-token KL

It sits on top of the layers, as `cli` does: `core` calibrates and rolls out, `study.judge` computes the judge's rows,
`report.leaderboard` ranks them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core.calibrate import CalibrationResult, JointCalibration, calibrate_budgets, check_budgets, first_budget
from .core.formats.concept import Concept
from .core.formats.interop import as_vector
from .core.formats.vector import Vector
from .core.model.inputs import as_lm, as_pairs, as_prompts
from .core.model.models import LM
from .core.runtimes import get_runtime
from .core.stats.statistic import TARGET, TOL
from .deprecated import renamed
from .report.leaderboard import Board
from .report.ranking import board
from .report.thresholds import HOLDOUT_BAND
from .results import CheckResult, Continuation, Generation, Grid
from .study import judge as _judge

__all__ = ["CheckResult", "Continuation", "Generation", "Grid", "calibrate", "check", "generate", "judge", "steer"]


def _bar(verbose: bool, desc: str):
    """A tqdm.auto bar (a widget in Jupyter, a line in a terminal), or None when silenced."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, leave=False, bar_format="{desc} ({elapsed})")


# ---- calibrate: one vector or many, jointly, with optional random-direction controls ----


@renamed(verbose="progress")
def calibrate(
    lm: Any,
    vectors: Any,
    prompts: Any,
    *,
    T: int = 20,
    controls: bool = False,
    pairs: Any = None,
    seed: int = 0,
    target: float = TARGET,
    tol: float = TOL,
    per_round: int = 1,
    start: float | Sequence[float | None] | None = None,
    add_library_prompts: int = 0,
    progress: bool | Callable[[int, Any, float], None] = True,
    runtime: str = "transformers",
    gguf: str | Path | None = None,
    budgets: Sequence[float] | None = None,
) -> Grid:
    """Calibrate one vector or many on the same prompts, jointly (one batch per solver round), each to p95 = target.

    controls: also one random-direction control per distinct layer set, calibrated with them to the same target (the
    floor `judge` compares against); its direction is drawn with `seed`, its scale from `pairs` (default: the built-in
    sentiment pairs of that seed). progress: True a progress bar (tqdm.auto), False nothing, or a function f(vector
    index, stats, seconds) told each evaluation instead (`core.calibrate.eval_lines`: the CLI's lines). Other options:
    `calibrate_iso_kl`'s. runtime="llama.cpp": every evaluation's rollouts and KL from llama.cpp on the model's GGUF
    file (`gguf`: a bundled model's own file by default), so c* is the served model's dose (`core.served`; the `llama`
    extra); each vector records the runtime, the file and its quantization. budgets: several p95 targets (nats, e.g.
    (0.5, 1, 2)) instead of `target`: every vector (and control) calibrated to each, the later ones reading the
    first one's evaluations (`core.calibrate.calibrate_budgets`); the Grid returned is at the budget nearest 1 nat
    and `grid.by_budget` holds each one's (`judge` judges them all).
    """
    rt = get_runtime(runtime)  # before anything runs (the controls' extraction included)
    if budgets is not None and target != TARGET:
        raise ValueError(f"give budgets or target, not both (target={target:g}, budgets={tuple(budgets)})")
    levels = check_budgets(budgets if budgets is not None else (target,))
    lm = as_lm(lm)
    many = list(vectors) if isinstance(vectors, (list, tuple)) else [vectors]
    if not many:
        raise ValueError("calibrate needs at least one vector (got none)")
    if T < 1:
        raise ValueError(f"the window T must be at least 1 generated token, got {T}")
    starts = list(start) if isinstance(start, Sequence) else [start] * len(many)
    if len(starts) != len(many):
        raise ValueError(f"start: one value for all vectors or one per vector ({len(many)}), got {len(starts)}")
    prompts = as_prompts(prompts, "calibration prompts") if prompts else []
    control_pairs = as_pairs(pairs) if pairs is not None else None  # checked before anything runs
    vecs = [as_vector(lm, v, prompts or None) for v in many]
    for v in vecs:  # before the controls' extraction and any rollout
        rt.accept(v.method)
    ctrl: dict[tuple[int, ...], Vector] = {}
    if controls:
        from .core.formats.concept import extraction_pairs

        ctrl = _judge.control_vectors(lm, vecs, control_pairs or extraction_pairs(seed), seed)
    every = [*vecs, *ctrl.values()]
    joints: dict[float, JointCalibration] = calibrate_budgets(
        lm,
        every,
        prompts,
        levels,
        T=T,
        tol=tol,
        per_round=per_round,
        start=[*starts, *[None] * len(ctrl)],
        progress=progress,
        add_library_prompts=add_library_prompts,
        runtime=runtime,
        gguf=gguf,
    )
    n = len(vecs)
    grids = {
        b: Grid(j.results[:n], dict(zip(ctrl, j.results[n:], strict=True)), j.rounds, j.seconds, budget=b)
        for b, j in joints.items()
    }
    first = first_budget(levels)
    return dataclasses.replace(grids[first], others={b: g for b, g in grids.items() if b != first})


# ---- judge ----


@renamed(phase="progress", verbose="progress", horizon="T")
def judge(
    lm: Any,
    results: Grid | Sequence[CalibrationResult],
    concept: Concept | str | None = None,
    *,
    alphas: Sequence[float] = (1.0,),
    controls: Sequence[CalibrationResult] = (),
    T: int = _judge.HORIZON,
    pmass: bool = False,
    seed: int | None = None,
    progress: bool | Callable[[str], None] = True,
    out: str | Path | None = None,
    scorers: dict[str, Callable[[str], float]] | None = None,
    rank_by: str | None = None,
    heldout: int | None = None,
) -> Board:
    """Each calibrated vector at alpha x c* on the concept's held-out sets, in one batch, ranked (docs/decisions.md,
    "The judge"). results: a `Grid` (its controls come with it) or calibration results; controls: calibrated
    random-direction vectors, matched to the vectors by their layers; concept: a Concept, a folder or 'sentiment'
    (the default). T: tokens of each held-out continuation. out: also write the judge's rows into OUT/judge/ (what
    `isokl report OUT` reads back); progress: True a progress bar, False nothing, or a function told each phase's
    name instead. scorers: your own rulers, name -> a function text ->
    float (e.g. a classifier's probability): a column each, the shift of the steered text against the base text per
    prompt with its interval and beyond the control. rank_by: the ranking reading, "concept", "question",
    "delta_logit" or a scorer's name (None: the default, docs/concepts.md); heldout: how many held-out prompts
    (None: the default, 24)."""
    concept = concept if isinstance(concept, Concept) else Concept.load(concept or "sentiment")
    _judge.rank_reading(concept, rank_by, dict(scorers or {}))  # bad input: one line, before the model loads
    _judge.sizes(concept, pmass, heldout)
    lm = as_lm(lm)
    grids = results.by_budget if isinstance(results, Grid) else {math.nan: results}
    bar = _bar(progress is True, "judging")

    def step(label: str) -> None:
        if bar is not None:
            bar.set_description_str(f"judging: {label}")

    boards = {}
    tell = progress if callable(progress) else step
    try:
        for b, grid in grids.items():
            if isinstance(grid, Grid):
                by_layers = {**grid.controls, **{c.vector.layers: c for c in controls}}
                vectors = list(grid.results)
            else:
                by_layers, vectors = {c.vector.layers: c for c in controls}, list(grid)
            judged = _judge.judge(
                lm,
                vectors,
                concept,
                alphas=alphas,
                controls=by_layers,
                horizon=T,
                pmass=pmass,
                seed=seed,
                phase=_labelled(tell, f"{b:g} nats: ") if len(grids) > 1 else tell,
                scorers=scorers,
                rank_by=rank_by,
                heldout=heldout,
            )
            if out is not None:
                _judge.write(budget_dir(Path(out), b, results), judged)
            boards[b] = board(judged.rows, judged.record)
    finally:
        if bar is not None:
            bar.close()
    if len(boards) == 1:
        return next(iter(boards.values()))
    first = results.budget if isinstance(results, Grid) else next(iter(boards))
    return dataclasses.replace(boards[first], others={b: x for b, x in boards.items() if b != first})


def _labelled(tell: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda label: tell(prefix + label)


def budget_dir(out: Path, budget: float, grid: Any) -> Path:
    """Where a budget's vectors and judge rows go: OUT itself for the grid's own budget (a grid of one budget is
    laid out as before), OUT/budget-B/ for each other budget B."""
    own = grid.budget if isinstance(grid, Grid) else budget
    return out if budget == own or math.isnan(budget) else out / f"budget-{budget:g}"


# ---- check ----


@renamed("window", "alpha", window="T")
def check(
    lm: Any,
    vector: Any,
    prompts: Any,
    *,
    T: int | None = None,
    alpha: float = 1.0,
    runtime: str = "transformers",
    gguf: str | Path | None = None,
) -> CheckResult:
    """C1 for one vector: the held-out p95 of `vector` at alpha x c* on `prompts` (T tokens each, default the vector's
    calibration window), with its 90% prompt-bootstrap interval and the verdict against R1's band.

    runtime="llama.cpp": the same measurement where the vector is served: the vector exported as llama.cpp's control
    vector GGUF (alpha x c* baked in), read back by llama.cpp's own parser, applied to the model's GGUF file (`gguf`:
    a bundled model's own file by default), rollouts and KL from llama.cpp's logits (`core.served`). Needs the
    `llama` extra."""
    rt = get_runtime(runtime)
    lm = as_lm(lm)
    prompts = as_prompts(prompts)
    vector = as_vector(lm, vector)
    rt.accept(vector.method)
    c = alpha * vector.coeff  # raises for an uncalibrated vector, saying how to calibrate it
    cal = vector.calibration
    assert cal is not None
    if len(prompts) < 2:
        raise ValueError(f"check needs at least 2 prompts for its interval, got {len(prompts)}")
    T = T or cal.window
    seqs = lm.encode([lm.format(p) for p in prompts])
    st, dtype, weights = rt.measure(lm, vector, seqs, T, alpha, gguf=gguf, sample=lm.format(prompts[0]))
    return _check_result(st, alpha, c, T, cal.target, dtype, runtime, weights)


def _check_result(st, alpha: float, c: float, T: int, target: float, dtype: str, runtime: str, weights: str) -> CheckResult:
    import numpy as np

    from .core.stats.statistic import P95

    kl = st.per_prompt
    assert kl is not None
    lo, hi = P95.prompt_interval(kl, level=0.90)
    own = tuple(P95.pooled(row[~np.isnan(row)]) if (~np.isnan(row)).any() else math.nan for row in kl)
    return CheckResult(
        alpha, c, T, kl.shape[0], st.p95, lo, hi, st.max, st.n_values, own, target, HOLDOUT_BAND, dtype, runtime, weights
    )


# ---- generate ----


@renamed(tokens="T")
def generate(lm: Any, vector: Any, prompts: Any, *, alphas: Sequence[float] = (1.0, 2.0), T: int = 60) -> Generation:
    """Base and steered greedy continuations of each prompt at c = alpha x c*, with each token's KL(steered || base)."""
    from .core.runtimes.rollout import rollout
    from .core.stats.statistic import P95
    from .study.measures import pieces

    lm = as_lm(lm)
    plist = as_prompts(prompts)
    alphas = tuple(float(a) for a in alphas)
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas must be positive dose multiples, got {alphas}")
    vector = as_vector(lm, vector)
    c_star = vector.coeff  # raises for an uncalibrated vector, saying how to calibrate it
    seqs = lm.encode([lm.format(p) for p in plist])
    base = rollout(lm, seqs, T, None, (0.0,))
    steered = rollout(lm, seqs, T, vector, tuple(a * c_star for a in alphas))
    decode = lambda ids: lm.tokenizer.decode(ids, skip_special_tokens=True)

    def one(ro, k: int, i: int, alpha: float) -> Continuation:
        row = ro.rows(k).start + i
        ok = ro.valid[row]
        ids = ro.tokens[row][ok].tolist()
        text = decode(ids)
        if ro.kl is None:
            return Continuation(alpha, 0.0, text.strip(), tuple(pieces(decode, ids)), ())
        kl = ro.kl[row][ok].double().cpu().tolist()
        return Continuation(
            alpha,
            ro.coeffs[k],
            text.strip(),
            tuple(pieces(decode, ids)),
            tuple(kl),
            P95.pooled(kl) if kl else math.nan,
            max(kl, default=math.nan),
        )

    return Generation(
        tuple(p.user if p.text is None else p.text for p in plist),
        vector.label,
        c_star,
        tuple(one(base, 0, i, 0.0) for i in range(len(plist))),
        tuple(tuple(one(steered, k, i, a) for k, a in enumerate(alphas)) for i in range(len(plist))),
    )


# ---- steer ----


@contextlib.contextmanager
def steer(model: Any, vector: Any, *, alpha: float = 1.0, c: float | None = None):
    """`with isokl.steer(model, v): model.generate(...)`: the model steered at c = alpha x c* (default alpha 1, the
    calibrated dose); c=: an explicit coefficient instead (an uncalibrated vector needs it). model: the HF model, an LM
    or (model, tokenizer); vector: a Vector or a calibration result. Hooks are removed on exit, whatever happens."""
    from .core.model.hooks import steer as _steer

    hf = model.model if isinstance(model, LM) else model[0] if isinstance(model, (tuple, list)) else model
    if isinstance(getattr(vector, "vector", None), Vector):
        vector = vector.vector
    if not isinstance(vector, Vector):
        raise ValueError(
            f"steer: got a {type(vector).__name__}; give an isokl Vector or calibration result "
            "(a vector from elsewhere: isokl.Vector.from_tensors(lm, tensors) first)"
        )
    if c is None:
        if vector.calibration is None:
            raise ValueError("steer: this vector is not calibrated, so alpha has no c* to multiply; pass c= or calibrate it")
        c = alpha * vector.coeff
    elif alpha != 1.0:
        raise ValueError("steer: give alpha (a multiple of c*) or c (a coefficient), not both")
    if not math.isfinite(c):
        raise ValueError(f"steer: c = {c} is not finite")
    with _steer(hf, vector, c) as m:
        yield m
