"""Judge: calibrated vectors + a concept -> the study's held-out rows for each of them at doses alpha x c*, plus the
concept score read from the text, written as a folder of CSVs (`write`) for `report.leaderboard` to rank.

Every vector's held-out measures are the sweep's own (`measures.MEASURES` on a `HeldOut`), their generic rollouts and
target-axis forwards run in one batch for all vectors (`measures.held_out_many`); the base model's rows come from the
same measures at alpha 0. The concept score (`metrics.concept_axis`, `metrics.text_projection`) is the judge's own
measure: each continuation, steered and base, read by the unsteered base model along the concept's pairs' direction
at one reference block chosen from the pairs alone (the same ruler for every vector, `metrics.reference_block`). Definitions: docs/decisions.md, "The judge". Rows name each vector `method@layers` in the
`method` column (a grid holds one method at several layer sets).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.calibrate import CalibrationResult
from ..core.formats.concept import SETS, Concept
from ..core.formats.vector import Vector
from ..core.model.files import folder
from ..core.model.models import LM
from ..core.runtimes.rollout import prefill_base
from ..core.stats.statistic import TARGET
from .flags import QUICK
from .measures import MEASURES, HeldOut, held_out_many, history_rows
from .metrics import Reference, question_reading, reference_block, text_projection
from .records import BASE, JUDGE_DIR, JUDGE_FILES, _write_rows, code_version, columns

# the quick protocol's held-out sizes and horizon (`config.QUICK`)
JUDGE_SIZES = dict(zip(SETS, (int(x) for x in str(QUICK["n_heldout"]).split(",")), strict=True))
HORIZON = int(QUICK["horizon"])
SKIP_WITHOUT_PMASS = {"pmass"}


def name(v: Vector) -> str:
    """A vector's name in the judge's rows: method@layers, e.g. pca@12-17 (layers as `Vector.label` spells them)."""
    return f"{v.method}@{v.label.rsplit(' ', 1)[-1]}"


@dataclass(frozen=True)
class Judged:
    """The judge's rows (study schema per file, plus `concept_score`) and what produced them."""

    rows: dict[str, list[dict]]
    settings: dict
    seconds: float

    @property
    def record(self) -> dict:
        """The settings with the judge's seconds: judge/settings.json, and what `report.ranking.board` reads."""
        return {**self.settings, "seconds": round(self.seconds, 1)}


# The built-in ranking readings (a user's scorer is ranked by its name), and the default's order of preference: the
# first one a concept has (a question, probes) ranks its board. Chosen by agreement with an outside scorer under a
# protocol frozen before it ran (docs/decisions.md, "A ranking that holds up").
READINGS = ("concept", "question", "delta_logit")
RANKING = ("delta_logit", "concept", "question")


def rank_reading(concept: Concept, rank_by: str | None, scorers: dict) -> str:
    """The board's ranking reading: rank_by if given (a built-in reading the concept has, or a scorer's name), else
    the first of `RANKING` the concept has. One ValueError naming what is missing."""
    check_scorers(scorers, rank_by)
    if rank_by in (None, ""):
        return next(r for r in RANKING if concept.has_reading(r))
    if rank_by in READINGS and not concept.has_reading(rank_by):
        lack = "question in concept.json" if rank_by == "question" else "probes.jsonl and words.json"
        raise ValueError(f"rank_by {rank_by!r}: concept {concept.name} has no {lack}; rank by another reading")
    return rank_by


def sizes(concept: Concept, pmass: bool, heldout: int | None = None) -> dict[str, int]:
    """Prompts per held-out set: the quick protocol's (heldout: that many held-out prompts instead), capped at what
    the concept has (no probes: 0)."""
    have = concept.sizes()
    n = {k: min(v, have[k]) for k, v in JUDGE_SIZES.items()}
    if heldout is not None:
        if heldout < 2:
            raise ValueError(f"heldout: {heldout}; give at least 2 held-out prompts (an interval needs two)")
        if heldout > have["heldout_generic"]:
            raise ValueError(f"heldout: {heldout} prompts asked, concept {concept.name} has {have['heldout_generic']}")
        n["heldout_generic"] = heldout
    if not pmass:
        n["heldout_truefalse"] = 0
    return n


def judge(
    lm: LM,
    results: Sequence[CalibrationResult],
    concept: Concept,
    *,
    alphas: Sequence[float] = (1.0,),
    controls: dict[tuple[int, ...], CalibrationResult] | None = None,
    horizon: int = HORIZON,
    pmass: bool = False,
    seed: int | None = None,
    phase: Callable[[str], None] = lambda s: None,
    scorers: dict[str, Callable[[str], float]] | None = None,
    rank_by: str | None = None,
    heldout: int | None = None,
) -> Judged:
    """Every calibrated vector (and each layer set's control) at c = alpha x c* on the concept's held-out sets, in one
    batch; a vector that did not converge is judged at its last c. -> the rows of every file, the base model's too.
    scorers: name -> a function text -> float (the user's own ruler), each judged continuation scored against the base
    model's continuation of the same prompt (`scorer_score`); rank_by: "concept", "question", "delta_logit" or a
    scorer's name (None: the default, `rank_reading`); heldout: held-out prompts (None: `JUDGE_SIZES`)."""
    alphas = tuple(sorted({float(a) for a in alphas}))
    scorers = dict(scorers or {})
    rank_by = rank_reading(concept, rank_by, scorers)
    if not results:
        raise ValueError("judge needs at least one calibrated vector")
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas must be positive dose multiples, got {alphas}")
    window = max(r.vector.calibration.window for r in results if r.vector.calibration is not None)
    if horizon < window:
        raise ValueError(f"the held-out horizon ({horizon}) must be at least the calibration window T = {window}")
    t0 = time.time()
    controls = dict(controls or {})
    every = [*results, *controls.values()]
    n = sizes(concept, pmass, heldout)
    concept.check_for(lm, horizon, n)
    version = code_version()

    def prov(method: str, res: CalibrationResult | None) -> dict:
        cal = res.vector.calibration if res is not None else None
        return {
            "model": lm.id,
            "concept": concept.name,
            "method": method,
            "seed": seed if res is not None and seed is not None else "",
            "window": cal.window if cal is not None else "",
            "code_version": version,
            "time": "",
        }

    items = [(r.vector, tuple(a * r.c_star for a in alphas), alphas, prov(name(r.vector), r)) for r in every]
    phase(f"held-out rollouts of {len(items)} vectors in one batch")
    # every judged continuation is kept (examples=None), so a grid can be re-scored offline by any scorer
    helds = held_out_many(lm, items, n, horizon, concept, pmass_alphas=alphas, examples=None)
    base = HeldOut(lm, None, (0.0,), (0.0,), n, horizon, prov(BASE, None), pmass_alphas=(0.0,), concept=concept, examples=None)
    rows: dict[str, list[dict]] = {f: [] for f in [*MEASURES, "calibration", "history", *JUDGE_FILES]}
    phase("the base model's held-out rollouts, then every vector's measures")
    for h in [base, *helds]:
        for file, (_, fn) in MEASURES.items():
            if file in SKIP_WITHOUT_PMASS and not pmass:
                continue
            rows[file] += fn(h)
    phase("concept score: the base model reads every continuation at one reference block")
    ref = reference_block(lm, concept.pairs())
    rows["concept_score"] = concept_scores(lm, concept, base, helds, ref)
    if concept.question:
        phase(f"behavioural reading: the base model answers {concept.question!r} about every reply")
        rows["question_score"] = question_scores(lm, concept, rows["examples"], n["heldout_generic"])
    if scorers:
        phase(f"your scorers ({', '.join(scorers)}) read every continuation")
        rows["scorer_score"] = scorer_scores(rows["examples"], scorers)
    for r, h in zip(every, helds, strict=True):
        rows["calibration"].append(calibration_row(r, h))
        rows["history"] += history_rows(r, h.prov)  # every solver step: the report page's calibration view
    settings = {
        "model": lm.id,
        "concept": concept.name,
        "concept_source": concept.source,
        "heldout_source": "concept" if "heldout.jsonl" in concept.own else "library",
        "seed": seed,
        "window": window,
        "horizon": horizon,
        "alphas": list(alphas),
        "n_heldout": n,
        "pmass": pmass,
        "controls": {name(c.vector): " ".join(map(str, layers)) for layers, c in controls.items()},
        "control_of": {name(r.vector): name(controls[r.vector.layers].vector) for r in results if r.vector.layers in controls},
        "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "code_version": version,
        # the concept score's one ruler: the block every text is read at, and each block's leave-one-pair-out score
        "concept_block": ref.block,
        "concept_block_scores": [round(x, 4) for x in ref.scores],
        "scorers": list(scorers),
        "budget": _budget(results),
        "rank_by": rank_by,
        "question": concept.question,
        "answers": list(concept.answers or ()),
    }
    return Judged(rows, settings, time.time() - t0)


def _budget(results: Sequence[CalibrationResult]) -> float:
    """The p95 target the judged vectors were calibrated to (one budget per judged grid; else one line)."""
    targets = {r.vector.calibration.target for r in results if r.vector.calibration is not None}
    if len(targets) > 1:
        raise ValueError(
            f"the vectors judged together were calibrated to different budgets ({sorted(targets)}); judge each budget's grid apart"
        )
    return targets.pop() if targets else TARGET


def calibration_row(r: CalibrationResult, h: HeldOut) -> dict:
    """The calibration row of a judged vector (the study's `calibration` columns that a grid has)."""
    cal = r.vector.calibration
    assert cal is not None
    return {
        **h.prov,
        "layers": " ".join(map(str, r.vector.layers)),
        "c_star": r.c_star,
        "c_star_lo": r.c_interval.lo,
        "c_star_hi": r.c_interval.hi,
        "converged": int(r.converged),
        "status": r.status,
        "calib_p95": r.p95,
        # the study's column (first T held-out tokens at 1x; nan where 1x was not judged); the leaderboard
        # computes it at every dose from trajectory.csv
        "holdout_p95": h.generic.stats(h.alphas.index(1.0), cal.window).p95 if 1.0 in h.alphas else float("nan"),
        "evaluations": r.evaluations,
        "seconds": round(r.seconds, 1),
    }


def concept_scores(lm: LM, concept: Concept, base: HeldOut, helds: list[HeldOut], ref: Reference | None = None) -> list[dict]:
    """Per vector, dose and held-out prompt: the steered and the base continuation read by the base model along the
    concept's axis at one reference block (`metrics.reference_block`, the same for every vector, so a prompt's base
    text has one reading), in units of the pairs' separation there; score = steered - base."""
    seqs = base.seqs("heldout_generic")
    ids = base.ids("heldout_generic")
    pairs = concept.pairs()
    ref = ref if ref is not None else reference_block(lm, pairs)

    def conts(ro, k: int) -> list[list[int]]:
        sl = ro.rows(k)
        return [t[v].tolist() for t, v in zip(ro.tokens[sl].cpu(), ro.valid[sl].cpu(), strict=True)]

    prefill = prefill_base(lm, seqs)  # the prompts are read once; each continuation is fed on their KV cache
    axis = ref.axis  # the pairs' axis at the reference block, from the forward that chose it
    base_proj = text_projection(lm, seqs, conts(base.generic, 0), axis, prefill)[:, 0]
    out = []
    for h in helds:
        for k in range(len(h.coeffs)):
            steered = text_projection(lm, seqs, conts(h.generic, k), axis, prefill)[:, 0]
            out += [
                h.row(k, prompt=pid, steered=float(steered[i]), base=float(base_proj[i]), score=float(steered[i] - base_proj[i]))
                for i, pid in enumerate(ids)
            ]
    return out


def question_scores(lm: LM, concept: Concept, examples: list[dict], n: int) -> list[dict]:
    """Per vector, dose and held-out prompt: the concept's question about the request and its steered reply, and
    about the same request's base reply, read by the unsteered model (`metrics.question_reading`, from the judge's own
    examples rows); score = steered - base log-odds of the positive answer."""
    assert concept.answers is not None
    request = {p.id: p.user for p in concept.heldout_set("heldout_generic", n)}
    read = question_reading(lm, [request[r["prompt"]] for r in examples], [r["text"] for r in examples], concept.question,
                            concept.answers)  # fmt: skip
    base = {r["prompt"]: float(v) for r, v in zip(examples, read, strict=True) if r["method"] == BASE}
    out = []
    for r, v in zip(examples, read, strict=True):
        if r["method"] != BASE:
            kept = {k: x for k, x in r.items() if k not in ("text", "tokens")}
            out.append({**kept, "steered": float(v), "base": base[r["prompt"]], "score": float(v) - base[r["prompt"]]})
    return out


def check_scorers(scorers: dict, rank_by: str | None) -> None:
    """Each scorer a callable under a plain name, none named like a built-in reading; rank_by None or one of the
    readings: one line, before anything runs."""
    for name, fn in scorers.items():
        if not name.isidentifier() or not callable(fn):
            raise ValueError(f"scorer {name!r}: give a plain name (letters, digits, _) and a function text -> float")
        if name in READINGS:
            raise ValueError(f"scorer {name!r}: the name of a built-in reading; give your scorer another name")
    if rank_by not in (None, "", *READINGS, *scorers):
        raise ValueError(
            f"rank_by {rank_by!r}: rank by one of {', '.join(READINGS)} or one of your scorers ({', '.join(scorers) or 'none given'})"
        )


def scorer_scores(examples: list[dict], scorers: dict[str, Callable[[str], float]]) -> list[dict]:
    """Per scorer, vector, dose and held-out prompt: the scorer's value of the steered and of the base continuation,
    read from the judge's own examples rows (every continuation, decoded once); score = steered - base. A value that
    is not a finite number is one error naming the scorer."""
    import math

    def value(name: str, text: str) -> float:
        v = scorers[name](text)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"scorer {name!r} returned {v!r} for {text[:40]!r}...: it must return a finite number")
        return float(v)

    steered = [r for r in examples if r["method"] != BASE]
    out = []
    for name in scorers:
        base = {r["prompt"]: value(name, r["text"]) for r in examples if r["method"] == BASE}
        for r in steered:
            v = value(name, r["text"])
            kept = {k: x for k, x in r.items() if k not in ("text", "tokens")}
            out.append({**kept, "scorer": name, "steered": v, "base": base[r["prompt"]], "score": v - base[r["prompt"]]})
    return out


def write(out: Path, judged: Judged) -> Path:
    """OUT/judge/: one CSV per file and settings.json, written into a temporary folder that is renamed when complete
    (an interrupted judge leaves the previous folder or none, never a half-written one)."""
    final = Path(out) / JUDGE_DIR
    with folder(final) as tmp:
        for file, rs in judged.rows.items():
            _write_rows(tmp / f"{file}.csv", columns(file), rs, False)  # small: plain CSV, `records.path` finds it
        (tmp / "settings.json").write_text(json.dumps(judged.record, indent=1) + "\n")
    return final


def control_vectors(lm: LM, vectors: Sequence[Vector], pairs, seed: int = 0) -> dict[tuple[int, ...], Vector]:
    """One random-direction control per distinct layer set of `vectors` (`random_direction`, this seed), to be
    calibrated to the same target with them: the floor of every effect."""
    from ..core.extract import extract

    out: dict[tuple[int, ...], Vector] = {}
    for v in vectors:
        if v.layers not in out:
            out[v.layers] = extract(lm, pairs, "random_direction", layers=v.layers, seed=seed)
    return out
