"""Calibrate: Vector + calibration prompts -> the dose c* whose p95 per-token KL is the target (1 nat).

Statistic (DESIGN.md s.3): per-token KL(p_steered || p_base) along the steered greedy
rollout of each prompt, pooled over N prompts x T tokens, 95th percentile. Why p95:
the mean hides the few tokens where steering takes over the text; the max is one
token's accident. Why greedy: the rollout is then a function of c, so p95(c) is too.

Solver: `solver` (the pure search, its own module) driven here for one vector or many in one batch per round.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .formats.interop import as_vector
from .formats.vector import Calibration, Vector
from .methods import get_method
from .model.inputs import as_lm, as_prompts
from .model.models import LM
from .model.prompts import Prompt, calibration_prompts, prompt_hash
from .runtimes import Job, Round, get_runtime
from .runtimes.rollout import KLStats, NonFiniteKL
from .stats.solver import Solve, solve, solver  # noqa: F401  (solve and Solve re-exported: the names callers know from here)
from .stats.statistic import P95, TARGET, TOL, Interval


@dataclass(frozen=True)
class CalibrationResult:
    vector: Vector  # the input vector with `calibration` filled in
    c_star: float
    p95: float  # at c*
    converged: bool
    status: str  # converged | unreachable | not_converged | jump (see `note`) | non_finite (see `error`)
    evaluations: int
    history: tuple[KLStats, ...]  # every evaluation: c, pooled stats, per_t_p95 / per_t_max of length T
    seconds: float
    c_interval: Interval  # c* as a band from the prompts' sampling (`P95.crossing_interval`; no extra evaluation)
    error: str = ""  # status non_finite: which vector, prompt, token and dose gave a non-finite KL
    note: str = ""  # status jump: where p95 jumps across the band, which side c* is and the fix

    def __repr__(self) -> str:
        from .show import result_repr

        return result_repr(self)

    def _repr_html_(self) -> str:
        from .show import result_html

        return result_html(self)


@dataclass(frozen=True)
class JointCalibration:
    """`calibrate_many`'s result: one CalibrationResult per input vector, in order, and the rounds that produced them."""

    results: tuple[CalibrationResult, ...]
    rounds: tuple[Round, ...]
    seconds: float


def calibrate_iso_kl(
    lm: LM,
    vector: Vector,
    prompts: list[Prompt],
    *,
    T: int = 20,
    target: float = TARGET,
    tol: float = TOL,
    max_evals: int = 20,
    c_max: float | None = None,
    progress: bool | Callable[[KLStats, float], None] = True,
    early_stop: bool = True,
    per_round: int = 1,
    draft: bool = True,
    start: float | None = None,
    add_library_prompts: int = 0,
) -> CalibrationResult:
    """Bracket then root-find c so that the pooled p95 KL over N prompts x T tokens equals `target`.

    per_round: coefficients evaluated together in one batched rollout per solver round. 1 is
    fastest on CPU (rows cost compute there); on a GPU, where a step is bound by per-call
    overhead, 4 cut a 7B calibration from 6.7 s to 3.8 s (docs/bench).
    draft: start each dose's rollout from the tokens of the nearest dose already evaluated
    (within a factor DRAFT_RATIO), checked several tokens per pass (`rollout`, draft=): late
    solver steps move c by a few percent, where the greedy text rarely changes, so their
    rollouts cost a few passes instead of T steps. Results are the same with draft=False.
    start: the first coefficient to evaluate (e.g. a c* found for another window or prompt
    set); None: a guess from the vector's activation scales. Speed only: the result is any
    c with |p95 - target| <= tol.
    progress: True shows a progress bar (tqdm.auto: a widget in Jupyter, a line in a terminal), False nothing; a
    function f(stats, seconds) gets each evaluation instead.
    lm: an LM or (model, tokenizer); vector: a Vector, or any vector `interop.as_vector` reads (a {layer: tensor}
    dict, a SteeringVector, a ControlVector, a file); prompts: strings, chat message lists or Prompts.
    add_library_prompts: add that many of the library's calibration prompts to yours (seed 0's draw): a few prompts
    make p95(c) a step function, more prompts smooth it (status "jump" says when).
    Raises NonFiniteKL where the KL is not finite (`calibrate_many` reports it as a status instead).
    """
    report = (lambda _j, s, secs: progress(s, secs)) if callable(progress) else progress
    res = calibrate_many(
        lm,
        [vector],
        prompts,
        T=T,
        target=target,
        tol=tol,
        max_evals=max_evals,
        c_max=c_max,
        progress=report,
        early_stop=early_stop,
        per_round=per_round,
        draft=draft,
        start=start,
        add_library_prompts=add_library_prompts,
    ).results[0]
    if res.status == "non_finite":
        raise NonFiniteKL(res.error)
    return res


def calibrate_many(
    lm: LM,
    vectors: Sequence[Vector],
    prompts: list[Prompt],
    *,
    T: int = 20,
    target: float | Sequence[float] = TARGET,
    tol: float = TOL,
    max_evals: int = 20,
    c_max: float | None = None,
    progress: bool | Callable[[int, KLStats, float], None] = True,
    early_stop: bool = True,
    per_round: int = 1,
    draft: bool = True,
    start: float | Sequence[float | None] | None = None,
    add_library_prompts: int = 0,
    runtime: str = "transformers",
    gguf: str | Path | None = None,
    known: Sequence[Sequence[KLStats]] | None = None,
) -> JointCalibration:
    """Calibrate several vectors (any methods, any layers) on the same prompts at once: each round rolls out, in one
    batch, the next doses of every vector still solving (`rollout_many`), and a vector whose solver has finished
    leaves the batch. Each vector runs its own solver (`solver`) with its own first guess, c_max, drafts and early
    stop, so its result is that of `calibrate_iso_kl` alone (up to the float rounding of a larger batch; see
    docs/calibration.md). Options as `calibrate_iso_kl`'s; start: one value for all or one per vector; progress: a
    function f(vector index, stats, seconds). A non-finite KL ends that vector only (status non_finite, `error` names
    it); the others go on. runtime="llama.cpp": the same solvers with every evaluation in llama.cpp on the model's GGUF
    file (`gguf`: a bundled model's own file by default; `runtimes.served`), one vector after the other. A runtime is
    any name of `runtimes.RUNTIMES`. target: one for all or one per vector; known: per vector, its evaluations for
    another target, read by its solver first (`calibrate_budgets`).
    """
    rt = get_runtime(runtime)
    lm = as_lm(lm)
    if not prompts and not add_library_prompts:
        raise ValueError("calibrate_iso_kl needs at least one calibration prompt (got none)")
    prompts = (as_prompts(prompts, "calibration prompts") if prompts else []) + (
        calibration_prompts(0, add_library_prompts) if add_library_prompts else []
    )
    if T < 1:
        raise ValueError(f"the window T must be at least 1 generated token, got {T}")
    if not vectors:
        raise ValueError("calibrate_many needs at least one vector (got none)")
    starts = list(start) if isinstance(start, Sequence) else [start] * len(vectors)
    targets = [float(t) for t in target] if isinstance(target, Sequence) else [float(target)] * len(vectors)
    knowns = [tuple(k) for k in known] if known is not None else [()] * len(vectors)
    for name, given in (("start", starts), ("target", targets), ("known", knowns)):
        if len(given) != len(vectors):
            raise ValueError(f"{name}: one value for all vectors or one per vector ({len(vectors)}), got {len(given)}")
    check_budgets(targets, unique=False)
    vectors = [as_vector(lm, v, prompts) for v in vectors]
    for v in vectors:
        rt.accept(v.method)  # e.g. llama.cpp adds only fixed vectors: one line before anything runs
    t0 = time.time()
    seqs = lm.encode([lm.format(p) for p in prompts])
    # A far-overshooting dose is known to overshoot after a few tokens: stop it there (its p95 is then a
    # lower bound >= 1.5 x target). Doses near the target run in full, so the solver interpolates true values.
    stop = P95.stop_above(max(targets), tol) if early_stop else None  # the highest target's: a lower one runs longer
    jobs = [Job(v, _first_dose(v, s, c_max), _c_max(v, c_max), k) for v, s, k in zip(vectors, starts, knowns, strict=True)]
    for job, t in zip(jobs, targets, strict=True):
        job.start(target=t, tol=tol, max_evals=max_evals, per_round=per_round)
    bar, report = _progress(progress, len(jobs))
    try:  # where: the fields each Calibration records (dtype; or runtime, weights file, quantization)
        where, rounds = rt.solve(
            lm, jobs, seqs, T, stop=stop, report=report, draft=draft, gguf=gguf, sample=lm.format(prompts[0])
        )
    finally:
        if bar is not None:
            bar.close()  # also on Ctrl-C: no bar left behind in a notebook
    results = tuple(_result(job, lm, prompts, T, t, t0, where) for job, t in zip(jobs, targets, strict=True))
    return JointCalibration(results, tuple(rounds), time.time() - t0)


def check_budgets(budgets: Sequence[float], unique: bool = True) -> tuple[float, ...]:
    """Budgets (p95 targets, nats): each a positive finite number, none repeated (unique) -> a tuple; else one line."""
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"budget {b!r}: a budget is a p95 per-token KL in nats, a number > 0")
        if unique and float(b) in out:
            raise ValueError(f"budget {b:g} is given twice; give each budget once")
        out.append(float(b))
    if not out:
        raise ValueError("budgets: give at least one (nats, e.g. (0.5, 1, 2))")
    return tuple(out)


def first_budget(budgets: Sequence[float]) -> float:
    """The budget calibrated first (and the one a grid is judged and saved at): the one nearest the study's 1 nat."""
    return min(budgets, key=lambda b: (abs(math.log(b / TARGET)), b))


def calibrate_budgets(
    lm: LM, vectors: Sequence[Vector], prompts: list[Prompt], budgets: Sequence[float], **options
) -> dict[float, JointCalibration]:
    """Every vector calibrated to each budget (p95 target, nats), in two joint solves that share their evaluations:
    first every vector to `first_budget`, then every other (vector, budget) at once, each solver reading that
    vector's evaluations so far (`known`: a dose already measured brackets or meets another budget for free) ->
    budget -> its JointCalibration (the second solve's rounds on each of the others). Options: `calibrate_many`'s."""
    budgets = check_budgets(budgets)
    if "target" in options or "known" in options:
        raise ValueError("calibrate_budgets: give the targets as budgets, not target=")
    first = first_budget(budgets)
    lead = calibrate_many(lm, vectors, prompts, target=first, **options)
    out = {first: lead}
    rest = [b for b in budgets if b != first]
    if rest:
        n = len(vectors)
        later = {k: v for k, v in options.items() if k != "start"}  # the known doses replace a first guess
        if callable(options.get("progress")):
            told = options["progress"]
            later["progress"] = lambda j, st, secs: told(j % n, st, secs)  # the vector's index, as in the first solve
        more = calibrate_many(
            lm,
            [v for _ in rest for v in vectors],
            prompts,
            target=[b for b in rest for _ in range(n)],
            known=[r.history for _ in rest for r in lead.results],
            **later,
        )
        for i, b in enumerate(rest):
            out[b] = JointCalibration(more.results[i * n : (i + 1) * n], more.rounds, more.seconds)
    return {b: out[b] for b in budgets}


def _progress(progress, n: int):
    """progress (True, False or a function f(vector index, stats, seconds)) -> (a tqdm bar or None, the function)."""
    if callable(progress) or not progress:
        return None, progress if callable(progress) else None
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"calibrating {n} vector{'s' if n > 1 else ''}", unit="eval", leave=False)

    def tick(j: int, s: KLStats, secs: float) -> None:
        bar.update(1)
        bar.set_postfix_str(f"[{j}] c = {s.c:.4g}, p95 {'=' if s.complete else '>'} {s.p95:.3f}")

    return bar, tick


def eval_lines(labels: Sequence[str]) -> Callable[[int, KLStats, float], None]:
    """A progress function for `calibrate_many` that prints one line per evaluation to stderr (what the CLI shows):
    the vector (when several), its evaluation count, c and p95."""
    count = [0] * len(labels)

    def line(j: int, s: KLStats, secs: float) -> None:
        count[j] += 1
        who = f"[{j}] {labels[j]}: " if len(labels) > 1 else ""
        mark = "=" if s.complete else ">"
        print(f"  {who}eval {count[j]:2d}: c = {s.c:10.4g}  p95 {mark} {s.p95:8.4f}  ({secs:.1f} s)", file=sys.stderr, flush=True)

    return line


def _c_max(vector: Vector, c_max: float | None) -> float:
    return c_max if c_max is not None else max(1e3, 100.0 * vector.resid_norm)


def _first_dose(vector: Vector, start: float | None, c_max: float | None) -> float:
    top = _c_max(vector, c_max)
    if start is not None:
        if not (math.isfinite(start) and 0 < start < top):
            raise ValueError(f"start must be a coefficient in (0, c_max = {top:g}), got {start!r}")
        return start
    c0 = get_method(vector.method).initial_coeff(vector)
    return min(max(c0, 1e-6), top / 10) if math.isfinite(c0) else 1.0  # a degenerate scale must not stop the solver


def _result(job: Job, lm: LM, prompts: list[Prompt], T: int, target: float, t0: float, where: dict) -> CalibrationResult:
    """where: the Calibration's runtime fields (dtype; or runtime, weights, quantization)."""
    from .model.models import fingerprints

    if job.solve is None:  # failed: the dose nearest the target so far, if any
        hist = tuple(job.stats.values())
        best = min(hist, key=lambda h: abs(h.p95 - target), default=None)
        sol = Solve(best.c if best else math.nan, best.p95 if best else math.nan, "non_finite", tuple((h.c, h.p95) for h in hist))
    else:
        sol = job.solve
    history = tuple(job.stats[c] for c, _ in sol.history)
    band = P95.crossing_interval([(h.c, h.per_prompt if h.complete else None) for h in history], target)
    cal = Calibration(
        coeff=sol.c,
        target=target,
        statistic=P95.name,
        window=T,
        prompt_hash=prompt_hash(prompts),
        converged=sol.converged,
        status=sol.status,
        p95=sol.value,
        evaluations=len(sol.history) - job.n_known,
        n_prompts=len(prompts),
        c_lo=band.lo,
        c_hi=band.hi,
        interval=band.describe(),
        **where,
        **fingerprints(lm),
    )
    return CalibrationResult(
        vector=job.vector.calibrated(cal),
        c_star=sol.c,
        p95=sol.value,
        converged=sol.converged,
        status=sol.status,
        evaluations=len(sol.history) - job.n_known,  # this target's own; `history` leads with the known ones
        history=history,
        seconds=job.finished - t0,  # from the start of the joint calibration to this vector's last round
        c_interval=band,
        error=job.error,
        note=sol.note,
    )
