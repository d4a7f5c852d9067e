"""Leaderboard: the ranked `Board` of a judged grid (one `Entry` per vector and dose; `report.ranking` builds it from
the judge's rows), the places its intervals support (`places`), and its tables: grid.md and grid.csv (`report.grid`
writes them with the figure; numpy; no torch). The ranking rule: docs/decisions.md, "The judge" and "A ranking that
holds up".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..study.records import span
from .inference import Estimate
from .page import ruler
from .thresholds import HOLDOUT_BAND

NAN = Estimate(math.nan, math.nan, math.nan, 0, 0)


@dataclass(frozen=True)
class Entry:
    """One judged vector at one dose alpha."""

    name: str  # method@layers
    method: str
    layers: str
    alpha: float
    c: float
    c_star: float
    status: str
    converged: bool
    control: str  # its layer set's control ('' for a control, or where none was run)
    is_control: bool
    heldout_p95: float  # over the first T held-out tokens at this dose
    heldout_lo: float  # 90% prompt-bootstrap interval
    heldout_hi: float
    in_band: bool  # R1's held-out band (meaningful at alpha = 1)
    concept: Estimate  # concept score, steered - base text, units of the pairs' separation
    concept_vs_control: Estimate | None  # minus the control's, paired per prompt
    delta_logit: Estimate | None  # None: the concept has no probes (not measured)
    delta_vs_control: Estimate | None
    question: Estimate | None  # behavioural reading, steered - base reply; None: the concept asks no question
    question_vs_control: Estimate | None
    excess_nll: Estimate  # nats per token
    repetitive: Estimate  # share of continuations with distinct-3 < 0.5
    base_repetitive: float
    pmass_change: Estimate | None  # None: not measured (--pmass)
    scores: dict[str, Estimate] = field(default_factory=dict)  # a user's scorer: shift against the base text
    scores_vs_control: dict[str, Estimate | None] = field(default_factory=dict)  # the same minus the control's

    def _pair(self, by: str) -> tuple[Estimate | None, Estimate | None]:
        return {
            "concept": (self.concept, self.concept_vs_control),
            "question": (self.question, self.question_vs_control),
            "delta_logit": (self.delta_logit, self.delta_vs_control),
        }.get(by, (self.scores.get(by), self.scores_vs_control.get(by)))

    def own(self, by: str) -> Estimate | None:
        """A reading ("concept", "question", "delta_logit" or a user's scorer) against the base text; None where it
        was not measured."""
        return self._pair(by)[0]

    def reading(self, by: str) -> Estimate | None:
        """The ranking reading: `own` beyond the control, or `own` itself where no control was run."""
        own, beyond = self._pair(by)
        return beyond if beyond is not None else own


@dataclass(frozen=True)
class Board:
    settings: dict
    entries: tuple[Entry, ...]  # ranked: vectors by their ranking reading at alpha 1 (then by dose), then the controls
    others: dict[float, Board] = field(default_factory=dict, repr=False)  # the same grid judged at other budgets

    @property
    def budget(self) -> float:
        """The p95 target (nats) its vectors were calibrated to."""
        return float(self.settings.get("budget", 1.0))

    @property
    def by_budget(self) -> dict[float, Board]:
        """Every budget's Board, this one included, in increasing budget."""
        return dict(sorted({self.budget: self, **self.others}.items()))

    @property
    def rank_by(self) -> str:
        return self.settings.get("rank_by", "concept")

    def at(self, alpha: float) -> list[Entry]:
        return [e for e in self.entries if e.alpha == alpha]

    def ranked(self) -> list[str]:
        """The vectors' names in order of their ranking reading's mean (controls aside): `places` says which of them
        the intervals tell apart."""
        return list(dict.fromkeys(e.name for e in self.entries if not e.is_control))

    @cached_property
    def places(self) -> dict[str, Place]:
        """Each vector's place at alpha 1 (`place`): what the ranking reading's 95% intervals support."""
        one = [e for e in self.at(_one(self.settings.get("alphas", [1.0]))) if not e.is_control]
        return places({e.name: e.reading(self.rank_by) for e in one})

    def resolution(self) -> float:
        """The smallest difference of the ranking reading this board calls: two vectors are told apart when their
        95% intervals do not overlap, i.e. (for intervals of typical width) when they differ by more than about the
        sum of two median half-widths."""
        half = [(r.hi - r.lo) / 2 for e in self.at(_one(self.settings.get("alphas", [1.0]))) if not e.is_control
                for r in [e.reading(self.rank_by)] if r is not None and math.isfinite(r.hi - r.lo)]  # fmt: skip
        return 2 * float(np.median(half)) if half else math.nan

    def __repr__(self) -> str:
        ranked = self.ranked()
        n = sum(e.is_control for e in self.at(1.0))
        top = ""
        if ranked:
            tied = sum(p.tied_with_best for p in self.places.values()) - 1
            top = f": first {ranked[0]}" + (f", tied with {tied} other{'s' if tied != 1 else ''}" if tied > 0 else "")
        return f"Board({len(ranked)} vectors, {n} control{'s' if n != 1 else ''}{top}; by {self.rank_by})"

    def _repr_html_(self) -> str:
        """The leaderboard as the CLI prints it (`lines`), as an HTML table."""
        from ..core.show import table

        cells = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines(self)]
        return table(cells[0], cells[2:])


@dataclass(frozen=True)
class Place:
    """A vector's place on the board: `label` as the tables print it ("1", "1=" for a shared place, "n/a" where the
    reading was not measured), the place itself (None: not measured), and whether it shares the leader's place."""

    label: str
    place: int | None
    tied_with_best: bool


def _overlap(a: Estimate, b: Estimate) -> bool:
    return a.lo <= b.hi and b.lo <= a.hi


def places(readings: dict[str, Estimate | None]) -> dict[str, Place]:
    """Names -> each one's reading (mean and 95% interval) -> their places, never a strict order the intervals do not
    support: the leader is the highest mean; a vector whose interval overlaps the leader's shares first place; any
    other's place is 1 + the number of vectors whose interval lies wholly above its own. A place two or more vectors
    hold is printed with "=" (e.g. "1=", "4=")."""
    ok = {k: r for k, r in readings.items() if r is not None and math.isfinite(r.mean)}
    if not ok:
        return {k: Place("n/a", None, False) for k in readings}
    lead = ok[max(ok, key=lambda k: ok[k].mean)]
    place = {}
    for k, r in ok.items():
        tied = _overlap(r, lead)
        place[k] = (1 if tied else 1 + sum(o.lo > r.hi for o in ok.values()), tied)
    count: dict[int, int] = {}
    for p, _ in place.values():
        count[p] = count.get(p, 0) + 1
    out = {k: Place("n/a", None, False) for k in readings}
    out |= {k: Place(f"{p}{'=' if count[p] > 1 else ''}", p, tied) for k, (p, tied) in place.items()}
    return out


def _one(alphas) -> float:
    """The dose the board ranks at: alpha 1, or the nearest one judged."""
    return min(alphas, key=lambda a: abs(a - 1.0)) if alphas else 1.0


# ---- text -----------------------------------------------------------------------------------------------------------


def _iv(e: Estimate | None, fmt: str = "+.3f") -> str:
    if e is None:
        return "not measured"
    if math.isnan(e.mean):
        return "n/a"
    return f"{e.mean:{fmt}} [{e.lo:{fmt}}, {e.hi:{fmt}}]"


@dataclass(frozen=True)
class Column:
    """One leaderboard column, the one place it is defined: its CSV fields and values, its markdown header and cell,
    the sentence the grid's header says about it, and when the markdown table shows it (the CSV always holds it)."""

    header: str  # markdown header ("" for a CSV-only column)
    csv: Callable[[Entry], dict[str, str]]  # its CSV fields -> values, in order
    md: Callable[[Entry], str] | None = None  # its markdown cell; None: CSV only
    help: str = ""  # one sentence for the grid's header
    shown: Callable[[Board], bool] = lambda b: True


def estimate_column(key: str, header: str, get: Callable[[Entry], Estimate | None], help: str, fmt: str = "+.3f",
                    floor: bool = False, shown: Callable[[Board], bool] = lambda b: True) -> Column:  # fmt: skip
    """An estimate with its interval: CSV `key`, `key_lo`, `key_hi` (6 significant digits; "not measured" where None);
    markdown "mean [lo, hi]". floor: a control's own row prints "(floor)" (the value is relative to the control)."""

    def csv_(e: Entry) -> dict[str, str]:
        v = get(e)
        if v is None:
            return {key: "not measured", f"{key}_lo": "", f"{key}_hi": ""}
        return {key: f"{v.mean:.6g}", f"{key}_lo": f"{v.lo:.6g}", f"{key}_hi": f"{v.hi:.6g}"}

    def md(e: Entry) -> str:
        return "(floor)" if floor and e.is_control else _iv(get(e), fmt)

    return Column(header, csv_, md, help, shown)


def _probes(b: Board) -> bool:
    return any(e.delta_logit is not None for e in b.entries)


def _asked(b: Board) -> bool:
    return any(e.question is not None for e in b.entries)


def _pmass(b: Board) -> bool:
    return any(e.pmass_change is not None for e in b.entries)


def scorer_columns(name: str) -> list[Column]:
    """A user's scorer (`isokl.judge(..., scorers=)`): its shift against the base text and beyond the control."""
    return [
        estimate_column(
            f"score_{name}",
            name,
            lambda e: e.scores.get(name),
            f"{name}: your scorer's value of the steered text minus the base text's, per prompt",
        ),
        estimate_column(
            f"score_{name}_beyond_control",
            f"beyond ctrl ({name})",
            lambda e: e.scores_vs_control.get(name),
            "the same minus the control's, paired per prompt",
            floor=True,
        ),
    ]


def columns(b: Board) -> list[Column]:
    """Every column of this board, in order: the fixed ones, then one pair per user scorer before the held-out p95."""
    head = [
        Column(
            "#",
            lambda e: {"rank": _rank(b, e)},
            lambda e: "ctrl" if e.is_control else _rank(b, e),
        ),
        Column(
            "vector",
            lambda e: {"name": e.name, "method": e.method, "layers": _span(e.layers)},
            lambda e: f"{e.method} {_span(e.layers)}{_flag(e)}",
        ),
        Column("alpha", lambda e: {"alpha": f"{e.alpha:g}", "c": f"{e.c:.6g}"}, lambda e: f"{e.alpha:g}"),
        Column(
            "c*", lambda e: {"c_star": f"{e.c_star:.6g}", "status": e.status, "control": e.control}, lambda e: f"{e.c_star:.4g}"
        ),
    ]
    measures = [
        estimate_column(
            "concept",
            "concept",
            lambda e: e.concept,
            "concept: the steered text read by the unsteered "
            "base model along the pairs' direction at one reference block for every vector ({ruler}), "
            "minus the base text (1.0 = as far as the contrast pairs differ there; it cannot see a change "
            "the pairs do not contrast)",
        ),
        estimate_column(
            "beyond_control",
            "beyond ctrl",
            lambda e: e.concept_vs_control,
            "beyond ctrl: minus the random-direction control of the same layers, paired per prompt",
            floor=True,
        ),
        estimate_column(
            "delta_logit",
            "delta logit",
            lambda e: e.delta_logit,
            "delta logit: target-axis logit at the dose minus the base model's (probes)",
            "+.2f",
        ),
        estimate_column(
            "delta_beyond_control", "beyond ctrl (logit)", lambda e: e.delta_vs_control, "", "+.2f", floor=True, shown=_probes
        ),
        estimate_column(
            "question",
            "question",
            lambda e: e.question,
            "question: the unsteered model reads each request and reply and answers {question}; log-odds of "
            "{answers} for the steered reply minus the base reply",
            shown=_asked,
        ),
        estimate_column(
            "question_beyond_control", "beyond ctrl (question)", lambda e: e.question_vs_control, "", floor=True, shown=_asked
        ),
        estimate_column(
            "excess_nll",
            "excess NLL",
            lambda e: e.excess_nll,
            "excess NLL: base NLL per token of the steered text minus the base text's",
        ),
        Column(
            "repetitive",
            lambda e: {"repetitive": f"{e.repetitive.mean:.4g}", "base_repetitive": f"{e.base_repetitive:.4g}"},
            lambda e: f"{e.repetitive.mean:.0%} (base {e.base_repetitive:.0%})",
            "repetitive: share of continuations with distinct-3 < 0.5",
        ),
        estimate_column("pmass_change", "pmass change", lambda e: e.pmass_change, "", shown=_pmass),
    ]
    scorers = [c for name in b.settings.get("scorers", []) for c in scorer_columns(name)]
    tail = [
        Column(
            "held-out p95",
            lambda e: {
                "heldout_p95": f"{e.heldout_p95:.4f}",
                "heldout_p95_lo": f"{e.heldout_lo:.4f}",
                "heldout_p95_hi": f"{e.heldout_hi:.4f}",
            },
            lambda e: f"{e.heldout_p95:.3f} [{e.heldout_lo:.3f}, {e.heldout_hi:.3f}]",
            "held-out p95: over the first T tokens with its 90% prompt-bootstrap interval, R1 band [{lo}, {hi}]",
        ),
        Column("R1", lambda e: {"r1": "in band" if e.in_band else "out of band"}, lambda e: "in band" if e.in_band else "OUT"),
        Column("", lambda e: {"tied_with_best": _tied(b, e)}),  # CSV only: the # column says it ("1=")
    ]
    return [*head, *measures, *scorers, *tail]


def _rank(b: Board, e: Entry) -> str:
    return "control" if e.is_control else b.places[e.name].label


def _tied(b: Board, e: Entry) -> str:
    return "" if e.is_control else "1" if b.places[e.name].tied_with_best else "0"


READING_NAMES = {"concept": "concept score", "question": "the question's log-odds", "delta_logit": "delta logit"}


def header(b: Board) -> str:
    """The grid's header: the ranking rule, then each column's sentence."""
    said = "; ".join(c.help for c in columns(b) if c.shown(b) and c.help)
    by = b.rank_by
    res = b.resolution()
    told = (
        f"; at this size it tells two vectors apart when they differ by more than about {res:.3g}" if math.isfinite(res) else ""
    )
    text = (
        f"Ranked by {READING_NAMES.get(by, by)} beyond the control at alpha 1, in places its 95% intervals support: a "
        f"vector whose interval overlaps the leader's shares first place (1=), any other is placed after the vectors "
        f"whose intervals lie wholly above its own{told}. {said}. Other intervals: "
        "95% bootstrap over prompts (probes, questions). docs/concepts.md explains how to read it."
    )
    question = b.settings.get("question", "")
    answers = " against ".join(repr(a) for a in b.settings.get("answers", []))
    return text.format(lo=HOLDOUT_BAND[0], hi=HOLDOUT_BAND[1], ruler=ruler(b.settings), question=repr(question), answers=answers)


def _span(layers: str) -> str:
    """The `layers` column ('3 4 5 9') as tables name it (`records.span`: '3..5, 9')."""
    return span(int(x) for x in layers.split())


def _flag(e: Entry) -> str:
    return "" if e.converged else f" ({e.status}: judged at its last c)"


def lines(b: Board) -> list[str]:
    """The leaderboard as markdown table lines (header row first), one row per vector and dose."""
    cols = [c for c in columns(b) if c.md is not None and c.shown(b)]
    out = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for e in b.entries:
        out.append("| " + " | ".join(c.md(e) for c in cols if c.md is not None) + " |")
    return out


def budget_folder(budget: float, primary: float) -> str:
    """Where a budget's vector files and judge rows lie inside a grid folder: the folder itself for its own budget,
    budget-B/ for each other budget B."""
    return "" if budget == primary else f"budget-{budget:g}/"


def markdown(b: Board, title: str, files: dict[str, str] | None = None) -> str:
    """grid.md: the board at its budget; with other budgets, one table per budget after it (files: the vectors' file
    names at the board's own budget; another budget's lie in `budget_folder`)."""
    st = b.settings
    n = st["n_heldout"]
    where = (
        "the concept's held-out prompts"
        if st["heldout_source"] == "concept"
        else "the library's held-out prompts (the concept has none)"
    )
    sets = f"{n['heldout_generic']} of {where}, {st['horizon']} tokens each"
    sets += f"; {n['heldout_sentiment']} probes" if n["heldout_sentiment"] else "; no probes (delta logit not measured)"
    sets += f"; {n['heldout_truefalse']} true/false questions (pmass)" if n["heldout_truefalse"] else ""
    text = [
        title,
        "",
        header(b),
        "",
        f"Held-out: {sets}. Judged in {st.get('seconds', 0):.1f} s.",
        "",
    ]
    for budget, board_ in b.by_budget.items() if b.others else [(b.budget, b)]:
        if b.others:
            said = " (this board's own budget)" if budget == b.budget else f" (files in {budget_folder(budget, b.budget)})"
            text += [f"## Budget {budget:g} nats: p95 per-token KL = {budget:g} on the calibration prompts{said}", ""]
        text += [*lines(board_), ""]
    text.pop()
    if files:
        order = [n for n in dict.fromkeys(e.name for e in b.entries) if n in files]  # rank order: a rebuild lists the same
        text += ["", "Files: " + ", ".join(f"{k}: {files[k]}" for k in order + [k for k in files if k not in order])]
    return "\n".join(text) + "\n"


def csv_text(b: Board, files: dict[str, str] | None = None) -> str:
    """grid.csv: one row per vector, dose and budget (`budget`, nats), every column of the board."""
    files = files or {}
    rows = []
    for budget, board_ in b.by_budget.items():
        cols, at = columns(board_), budget_folder(budget, b.budget)
        rows += [
            {k: v for c in cols for k, v in c.csv(e).items()}
            | {"budget": f"{budget:g}", "file": at + files[e.name] if e.name in files else ""}
            for e in board_.entries
        ]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["budget", "file"])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
