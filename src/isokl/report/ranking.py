"""Ranking: the judge's rows (`study.judge`, a folder OUT/judge/ and OUT/budget-B/judge/ for other budgets, or rows
as computed) -> the ranked `leaderboard.Board`: one `Entry` per vector and dose, every number the study's estimator on
the judge's rows (`report.estimate` on a `report.index.Study`: one seed, so the bootstrap runs over prompts or probes
alone), plus the judge's own readings (concept, question, scorers). Definitions: docs/decisions.md, "The judge".
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ..core.stats.statistic import P95
from ..study.records import BASE, SCHEMAS, judge_rows, typed
from . import estimate as est
from .index import Study
from .inference import Estimate, hierarchical
from .leaderboard import NAN, Board, Entry, _one
from .thresholds import in_band


def load(out: Path) -> Board:
    """A grid folder's judge rows (OUT/judge/, and OUT/budget-B/judge/ for each other budget B) -> the ranked Board,
    its other budgets' Boards in `others`."""
    main = board(*judge_rows(out))
    others = {}
    for d in sorted(Path(out).glob("budget-*")):
        if (d / "judge").is_dir():
            b = board(*judge_rows(d))
            others[b.budget] = b
    return dataclasses.replace(main, others=others) if others else main


def _scores(rows: list[dict]) -> dict[tuple[str, float], dict[str, float]]:
    out: dict[tuple[str, float], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r["method"], r["alpha"]), {})[r["prompt"]] = r["score"]
    return out


def _paired(a: dict[str, float], b: dict[str, float]) -> Estimate:
    keys = sorted(set(a) & set(b))
    return hierarchical([np.array([a[k] - b[k] for k in keys])]) if keys else NAN


def _est(values: dict[str, float]) -> Estimate:
    return hierarchical([np.array(list(values.values()))]) if values else NAN


def _key(e: Entry, by: str) -> float:
    """The ranking key: the reading's mean beyond the control (`Entry.reading`); NaN where not measured."""
    r = e.reading(by)
    return r.mean if r is not None else math.nan


def _scorer_scores(rows: list[dict]) -> dict[tuple[str, float, str], dict[str, float]]:
    out: dict[tuple[str, float, str], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r["method"], r["alpha"], r["scorer"]), {})[r["prompt"]] = r["score"]
    return out


def board(data: dict[str, list[dict]], settings: dict) -> Board:
    """The judge's rows (as read from its files, or as computed) + its settings -> the ranked Board (by the concept
    score beyond the control, or by a user's scorer: settings["rank_by"])."""
    data = {name: typed(name, data.get(name, [])) for name in SCHEMAS}  # as computed or as read: one form
    s = Study(data)
    scores = _scores(data["concept_score"])
    asked = _scores(data["question_score"]) if data["question_score"] else None
    user = _scorer_scores(data["scorer_score"])
    names = list(settings.get("scorers", []))
    controls = set(settings.get("controls", {}))
    control_of = settings.get("control_of", {})
    window = int(settings["window"])
    base_rep = est.repetitive(s, settings["model"], BASE, 0.0)
    entries = []
    for cal in s.cal:
        name, model = cal["method"], cal["model"]
        k = (model, name, cal["seed"], cal["window"])
        ctrl = control_of.get(name, "")
        ck = (model, ctrl, cal["seed"], cal["window"])
        for alpha in s.alphas:
            arr = s.kl(k, alpha)
            if arr is None:
                continue
            head = arr[:, :window]
            p95 = P95.pooled(head[~np.isnan(head)])
            lo, hi = P95.prompt_interval(head, level=0.90)
            mine = scores.get((name, alpha), {})
            q = asked.get((name, alpha), {}) if asked is not None else None
            concept = _est(mine)
            delta = est.cell_delta_logit(s, k, alpha) if s.has_target else None
            delta_ctrl = None
            if s.has_target and ctrl:  # paired by probe, as the study's delta_vs_control
                mine_d, ctrl_d = est._delta_rows(s, [k], alpha), est._delta_rows(s, [ck], alpha)
                delta_ctrl = hierarchical([mine_d - ctrl_d]) if len(mine_d) == len(ctrl_d) and len(mine_d) else NAN
            pm = None
            if s.pmass.get((k, alpha)):
                pm = est.pmass_change(s, model, name, alpha)
            entries.append(
                Entry(
                    name=name,
                    method=name.split("@")[0],
                    layers=cal["layers"],
                    alpha=alpha,
                    c=cal["c_star"] * alpha,
                    c_star=cal["c_star"],
                    status=cal["status"],
                    converged=cal["converged"],
                    control=ctrl,
                    is_control=name in controls,
                    heldout_p95=p95,
                    heldout_lo=lo,
                    heldout_hi=hi,
                    in_band=in_band(p95),
                    concept=concept,
                    concept_vs_control=_paired(mine, scores.get((ctrl, alpha), {})) if ctrl else None,
                    delta_logit=delta,
                    delta_vs_control=delta_ctrl,
                    question=_est(q) if q is not None else None,
                    question_vs_control=_paired(q, asked.get((ctrl, alpha), {})) if q is not None and asked and ctrl else None,
                    excess_nll=est.excess_nll(s, model, name, alpha),
                    repetitive=est.repetitive(s, model, name, alpha),
                    base_repetitive=base_rep.mean,
                    pmass_change=pm,
                    scores={n: _est(user.get((name, alpha, n), {})) for n in names},
                    scores_vs_control={
                        n: _paired(user.get((name, alpha, n), {}), user.get((ctrl, alpha, n), {})) if ctrl else None
                        for n in names
                    },
                )
            )
    one = _one(s.alphas)
    by = settings.get("rank_by", "concept")
    rank = {e.name: -_key(e, by) if not math.isnan(_key(e, by)) else math.inf for e in entries if e.alpha == one}
    entries.sort(key=lambda e: (e.is_control, rank.get(e.name, math.inf), e.name, e.alpha))
    return Board(settings, tuple(entries))
