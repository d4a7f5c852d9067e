"""Concept: a folder of plain files -> the contrast pairs, prompts, probes and answer words of one steering concept
(no torch). The format is documented in docs/concepts.md; every check here names the file, line and field.

    concept/
      pairs.jsonl        required: contrast pairs, persona form (system_positive, system_negative, user,
                         assistant_prefix?) or full-text form (positive, negative), one object per line
      probes.jsonl       optional, with words.json: prompts ending where the concept shows (the target axis)
      words.json         {"positive": [...], "negative": [...]}: answer words of each side
      calibration.jsonl  optional: the user's prompt distribution for calibration (default: the generic pool)
      heldout.jsonl      optional: held-out prompts (default: the generic held-out pool)
      concept.json       optional: {"name", "description", "positive", "negative"}, and the judge's question about a
                         text with its two answers: "question", "answer_positive", "answer_negative" (all or none)

The built-in sentiment concept (`isokl/concepts/sentiment/`) is loaded through this same code. Seed s draws
`PAIRS_PER_DRAW` pairs and n calibration prompts (`prompts.draw`, the same salts as the v1/v2 study).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..model.prompts import Pair, Prompt, apart, draw, first_tokens, library_pool, library_rows, word_variants

PAIRS_PER_DRAW = 4  # contrast pairs per seed (the spec: "4 prompts each")
BUILTIN = ("sentiment",)  # concepts shipped in isokl/concepts/
DEFAULT = "sentiment"  # the spec's concept; rows and settings written before concepts existed are this one
PROMPT_FIELDS = {"id", "user", "system", "assistant_prefix"}
PERSONA_FIELDS = {"id", "system_positive", "system_negative", "user", "assistant_prefix"}
TEXT_FIELDS = {"id", "positive", "negative"}
META_FIELDS = {"name", "description", "positive", "negative", "question", "answer_positive", "answer_negative"}
QUESTION_FIELDS = ("question", "answer_positive", "answer_negative")  # the behavioural reading: all three or none
# The held-out sets by the names the settings and `--n-heldout GENERIC,TRUEFALSE,SENTIMENT` have used since v1:
# heldout_generic = the concept's held-out prompts, heldout_truefalse = the library's true/false questions
# (branch_pmass measures capability, not the concept), heldout_sentiment = the concept's probes.
SETS = ("heldout_generic", "heldout_truefalse", "heldout_sentiment")


class ConceptError(ValueError):
    """A concept file that cannot be used; the message names the file, line and field."""


def _is_text(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def read_jsonl(path: Path, allowed: set[str], label: str | None = None) -> list[tuple[int, dict]]:
    """(line number, object) of each non-empty line; malformed JSON, a non-object line, an unknown field or a field
    that is not a non-empty string is one ConceptError naming the file and line."""
    name = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConceptError(f"{name}: cannot be read ({e})") from None
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConceptError(f"{name} line {i}: not valid JSON ({e.msg} at column {e.colno}); one object per line") from None
        out.append((i, _fields(obj, allowed, f"{name} line {i}")))
    if not out:
        raise ConceptError(f"{name}: no rows (one JSON object per line)")
    return out


def _fields(obj, allowed: set[str], where: str) -> dict:
    """obj is a JSON object whose fields are all allowed and all non-empty strings; else one ConceptError at `where`."""
    if not isinstance(obj, dict):
        raise ConceptError(f"{where}: a JSON object is needed, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConceptError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for k, v in obj.items():
        if not _is_text(v):
            raise ConceptError(f"{where}: field {k!r} must be a non-empty string, got {json.dumps(v)}")
    return obj


def _ids(rows: list[tuple[int, dict]], name: str, stem: str) -> list[str]:
    """Each row's id (given, else STEM + line number); a duplicate is an error naming both lines."""
    seen: dict[str, int] = {}
    ids = []
    for i, r in rows:
        pid = r.get("id", f"{stem}{i:03d}")
        if pid in seen:
            raise ConceptError(f"{name} line {i}: duplicate id {pid!r} (also on line {seen[pid]}); ids must be unique")
        seen[pid] = i
        ids.append(pid)
    return ids


def _prompt_rows(path: str | Path, name: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """A prompts file's (line, row) pairs and ids: JSONL when the first non-empty line starts with '{', else plain text."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConceptError(f"{name}: does not exist or is not a file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConceptError(f"{name}: cannot be read ({e})") from None
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise ConceptError(f"{name}: no prompts (give one per line, or JSONL objects with a 'user' field)")
    if first.lstrip().startswith("{"):
        rows = read_jsonl(p, PROMPT_FIELDS, name)
        for i, r in rows:
            if "user" not in r:
                raise ConceptError(f"{name} line {i}: missing required field 'user'")
    else:
        rows = [(i, {"user": ln.strip()}) for i, ln in enumerate(lines, start=1) if ln.strip()]
    return rows, _ids(rows, name, "p")


def read_prompts(path: str | Path, label: str | None = None) -> tuple[list[Prompt], list[dict]]:
    """A prompts file -> (prompts, canonical rows). JSONL (`user`, optional `system`, `assistant_prefix`, `id`) when the
    first non-empty line starts with '{', else plain text: one user message per line (ids p001, p002, ... by line)."""
    rows, ids = _prompt_rows(path, label or str(path))
    canon = [{**r, "id": pid} for (_, r), pid in zip(rows, ids, strict=True)]
    prompts = [Prompt(r["user"], r.get("system"), r.get("assistant_prefix"), r["id"]) for r in canon]
    return prompts, canon


def line_of(path: str | Path, pid: str, pairs: bool = False) -> int | None:
    """The line of a prompts file (pairs: of a pairs file, pid 'ID+' / 'ID-') that holds the prompt with this id."""
    p = Path(path)
    if pairs:
        rows = read_jsonl(p, PERSONA_FIELDS | TEXT_FIELDS)
        ids = _ids(rows, str(p), "pair")
        pid = pid.rstrip("+-")
    else:
        rows, ids = _prompt_rows(p, str(p))
    return next((i for (i, _), x in zip(rows, ids, strict=True) if x == pid), None)


def _read_pairs(path: Path, name: str) -> tuple[list[Pair], list[dict]]:
    rows = read_jsonl(path, PERSONA_FIELDS | TEXT_FIELDS, name)
    ids = _ids(rows, name, "pair")
    pairs, canon = [], []
    for (i, r), pid in zip(rows, ids, strict=True):
        persona = {"system_positive", "system_negative", "user"} & set(r)
        text = {"positive", "negative"} & set(r)
        if persona and text:
            raise ConceptError(
                f"{name} line {i}: mixes the persona form (system_positive, system_negative, user) and the full-text form "
                "(positive, negative); use one"
            )
        if text:
            for k in ("positive", "negative"):
                if k not in r:
                    raise ConceptError(f"{name} line {i}: missing required field {k!r} (full-text form: positive, negative)")
            pairs.append(Pair(Prompt("", id=pid + "+", text=r["positive"]), Prompt("", id=pid + "-", text=r["negative"]), pid))
            canon.append({"id": pid, "text_positive": r["positive"], "text_negative": r["negative"]})
            continue
        for k in ("system_positive", "system_negative", "user"):
            if k not in r:
                raise ConceptError(
                    f"{name} line {i}: missing required field {k!r} (persona form: system_positive, system_negative, user, "
                    "optional assistant_prefix; or full-text form: positive, negative)"
                )
        pre = r.get("assistant_prefix")
        side = {k: Prompt(r["user"], r[f"system_{k}"], pre, pid + mark) for k, mark in (("positive", "+"), ("negative", "-"))}
        pairs.append(Pair(side["positive"], side["negative"], pid))
        # the row as the v1/v2 study hashed it (its settings.json): the system prompts under positive/negative
        canon.append({"id": pid, "positive": r["system_positive"], "negative": r["system_negative"], "user": r["user"]})
        if pre is not None:
            canon[-1]["assistant_prefix"] = pre
    return pairs, canon


def _read_words(path: Path, name: str) -> dict[str, list[str]]:
    try:
        words = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConceptError(f"{name} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConceptError(f"{name}: cannot be read ({e})") from None
    if not isinstance(words, dict) or set(words) != {"positive", "negative"}:
        got = sorted(words) if isinstance(words, dict) else type(words).__name__
        raise ConceptError(f'{name}: needs exactly the fields "positive" and "negative" (lists of words), got {got}')
    for side, ws in words.items():
        if not isinstance(ws, list) or not ws:
            raise ConceptError(f"{name}: field {side!r} must be a non-empty list of words")
        for j, w in enumerate(ws):
            if not _is_text(w):
                raise ConceptError(f"{name}: field {side!r} item {j}: must be a non-empty string, got {json.dumps(w)}")
    return words


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Concept:
    """A loaded, checked concept. `pairs(seed)`, `calibration(seed, n)`, `heldout()`, `probes()`, `words()`."""

    name: str
    description: str
    positive: str  # what the positive side of the pairs is
    negative: str
    source: str  # the folder, or "builtin:NAME"
    all_pairs: tuple[Pair, ...]
    calibration_pool: tuple[Prompt, ...]
    heldout_pool: tuple[Prompt, ...]
    probe_pool: tuple[Prompt, ...] | None
    answer_words: dict[str, list[str]] | None
    own: frozenset[str]  # the optional files the folder has (the rest are library defaults or absent)
    question: str = ""  # concept.json's question about a text (the judge's behavioural reading); "" where none
    answers: tuple[str, str] | None = None  # its positive and negative answer words; None where no question
    rows: dict[str, list[dict]] = field(default_factory=dict, repr=False)  # canonical rows, for the settings hashes
    pairs_file: str = ""  # a pairs file given alone (`from_pairs_file`), else "" (the folder's pairs.jsonl)

    def has_reading(self, reading: str) -> bool:
        """Whether the judge can read this concept's `reading`: the concept score always, the question where
        concept.json asks one, the delta logit where it has probes."""
        return (
            reading == "concept"
            or (reading == "question" and bool(self.question))
            or (reading == "delta_logit" and self.probe_pool is not None)
        )

    @property
    def builtin(self) -> bool:
        return self.source.startswith("builtin:")

    @classmethod
    def load(cls, path: str | Path = DEFAULT) -> Concept:
        """A concept folder, or the name of a built-in concept (`BUILTIN`) where no such folder exists."""
        p = Path(path).expanduser()
        if p.is_dir():
            return cls._from_folder(p, str(p))
        if str(path) in BUILTIN:
            return cls._from_folder(Path(str(files("isokl") / "concepts" / str(path))), f"builtin:{path}")
        if p.exists():
            raise ConceptError(f"{path}: is a file; a concept is a folder with pairs.jsonl (docs/concepts.md)")
        raise ConceptError(
            f"{path}: no such folder, and not a built-in concept ({', '.join(BUILTIN)}); a concept is a folder with "
            "pairs.jsonl (docs/concepts.md)"
        )

    @classmethod
    def builtin_default(cls) -> Concept:
        return cls.load(DEFAULT)

    @classmethod
    def from_pairs_file(cls, path: str | Path) -> Concept:
        """A pairs.jsonl file alone: a concept named after the file, with the library's prompts and no probes."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConceptError(f"{path}: does not exist or is not a file")
        return cls._from_folder(p.parent, str(p.parent), pairs_file=p)

    def label(self, fname: str) -> str:
        """Where a file of this concept is, for messages."""
        return self.pairs_file if fname == "pairs.jsonl" and self.pairs_file else f"{self.source}/{fname}"

    @classmethod
    def _from_folder(cls, d: Path, source: str, pairs_file: Path | None = None) -> Concept:
        label = lambda f: str(pairs_file) if f == "pairs.jsonl" and pairs_file else f"{source}/{f}"
        if pairs_file is None and not (d / "pairs.jsonl").is_file():
            raise ConceptError(f"{source}: has no pairs.jsonl (required: one contrast pair per line, docs/concepts.md)")
        meta: dict = {}
        if pairs_file is None and (d / "concept.json").is_file():
            try:
                meta = json.loads((d / "concept.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ConceptError(f"{label('concept.json')} line {e.lineno}: not valid JSON ({e.msg})") from None
            _fields(meta, META_FIELDS, label("concept.json"))
            given = [f for f in QUESTION_FIELDS if f in meta]
            if given and len(given) < len(QUESTION_FIELDS):
                lack = ", ".join(f for f in QUESTION_FIELDS if f not in meta)
                raise ConceptError(f"{label('concept.json')}: has {', '.join(given)} but no {lack}; the question needs all three")
        name = meta.get("name", pairs_file.stem if pairs_file else d.name)
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ConceptError(f"{label('concept.json')}: name {name!r} may hold only letters, digits, '-', '_' and '.'")
        pairs, pair_rows = _read_pairs(pairs_file or d / "pairs.jsonl", label("pairs.jsonl"))
        if len(pairs) < PAIRS_PER_DRAW:
            raise ConceptError(
                f"{label('pairs.jsonl')}: {len(pairs)} pairs; a seed draws {PAIRS_PER_DRAW}, so at least {PAIRS_PER_DRAW} are needed"
            )
        optional = ("calibration.jsonl", "heldout.jsonl", "probes.jsonl", "words.json")
        own = {f for f in optional if pairs_file is None and (d / f).is_file()}
        rows = {"pairs": pair_rows}
        if "calibration.jsonl" in own:
            cal, rows["calibration"] = read_prompts(d / "calibration.jsonl", label("calibration.jsonl"))
        else:
            cal, rows["calibration"] = library_pool("calibration"), library_rows("calibration")
        if "heldout.jsonl" in own:
            held, rows["heldout_generic"] = read_prompts(d / "heldout.jsonl", label("heldout.jsonl"))
        else:
            held, rows["heldout_generic"] = library_pool("heldout_generic"), library_rows("heldout_generic")
        if ("probes.jsonl" in own) != ("words.json" in own):
            have, lack = ("probes.jsonl", "words.json") if "probes.jsonl" in own else ("words.json", "probes.jsonl")
            raise ConceptError(f"{source}: has {have} but no {lack}; the target axis needs both (or neither)")
        probes, words = None, None
        if "probes.jsonl" in own:
            probes, rows["heldout_sentiment"] = read_prompts(d / "probes.jsonl", label("probes.jsonl"))
            words = _read_words(d / "words.json", label("words.json"))
        overlap = {p.user for p in cal} & {p.user for p in held}
        if overlap:
            raise ConceptError(
                f"{label('heldout.jsonl' if 'heldout.jsonl' in own else 'calibration.jsonl')}: {len(overlap)} prompt(s) are "
                f"both calibration and held-out prompts (e.g. {sorted(overlap)[0]!r}); held-out prompts must be new"
            )
        return cls(
            name=name,
            description=meta.get("description", ""),
            positive=meta.get("positive", "positive"),
            negative=meta.get("negative", "negative"),
            source=source,
            all_pairs=tuple(pairs),
            calibration_pool=tuple(cal),
            heldout_pool=tuple(held),
            probe_pool=tuple(probes) if probes is not None else None,
            answer_words=words,
            own=frozenset(own),
            question=meta.get("question", ""),
            answers=(meta["answer_positive"], meta["answer_negative"]) if "question" in meta else None,
            rows=rows,
            pairs_file=str(pairs_file) if pairs_file else "",
        )

    # ---- draws ----------------------------------------------------------------------------------------------

    def pairs(self, seed: int | None = None, k: int = PAIRS_PER_DRAW) -> list[Pair]:
        """Seed s's k contrast pairs (None: all of them)."""
        return list(self.all_pairs) if seed is None else draw(list(self.all_pairs), k, seed, "pairs")

    def calibration(self, seed: int, n: int) -> list[Prompt]:
        """Seed s's n calibration prompts."""
        if not 1 <= n <= len(self.calibration_pool):
            raise ConceptError(
                f"{self.name}: {n} calibration prompts asked, its calibration pool has {len(self.calibration_pool)}"
            )
        return draw(list(self.calibration_pool), n, seed, "calibration")

    def heldout(self, n: int | None = None) -> list[Prompt]:
        return list(self.heldout_pool[:n])

    def probes(self, n: int | None = None) -> list[Prompt] | None:
        """The target-axis probes, or None: the concept has none (the target axis is not measured)."""
        return None if self.probe_pool is None else list(self.probe_pool[:n])

    def words(self) -> dict[str, list[str]] | None:
        return None if self.answer_words is None else {k: list(v) for k, v in self.answer_words.items()}

    def max_seeds(self) -> int:
        """Seeds whose pair draws could be disjoint: floor(pairs / PAIRS_PER_DRAW). Draws are independent per seed
        (`prompts.draw`), so seeds may share pairs; more seeds than this must share some."""
        return len(self.all_pairs) // PAIRS_PER_DRAW

    def check_seeds(self, seeds: list[int], flag: str = "--seeds") -> None:
        if len(seeds) > self.max_seeds():
            raise ConceptError(
                f"{flag}: {len(seeds)} seeds asked, but {self.label('pairs.jsonl')} has {len(self.all_pairs)} pairs: enough for "
                f"{self.max_seeds()} seed(s) of {PAIRS_PER_DRAW} pairs; add pairs (at least {PAIRS_PER_DRAW * len(seeds)}) or ask fewer seeds"
            )

    # ---- held-out sets by their recorded names ------------------------------------------------------------------

    def sizes(self) -> dict[str, int]:
        """Prompts available in each held-out set (`SETS`); 0: the concept has no probes."""
        return {
            "heldout_generic": len(self.heldout_pool),
            "heldout_truefalse": len(library_pool("heldout_truefalse")),
            "heldout_sentiment": len(self.probe_pool or ()),
        }

    def heldout_set(self, name: str, n: int) -> list[Prompt]:
        """The first n prompts of a held-out set (`SETS`)."""
        if name == "heldout_generic":
            return self.heldout(n)
        if name == "heldout_truefalse":
            return library_pool("heldout_truefalse")[:n]
        if name == "heldout_sentiment":
            return self.probes(n) or []
        raise ValueError(f"unknown held-out set {name!r}; valid: {', '.join(SETS)}")

    def hashes(self, n: dict[str, int]) -> dict[str, str]:
        """Content hashes of what a study of this concept reads, by the names the settings have used since v1: the
        pairs and calibration pools whole (seeded draws depend on all of it), the held-out sets' first n rows."""
        out = {"pairs": _hash(self.rows["pairs"]), "calibration": _hash(self.rows["calibration"])}
        out["heldout_generic"] = _hash(self.rows["heldout_generic"][: n["heldout_generic"]])
        out["heldout_truefalse"] = _hash(library_rows("heldout_truefalse")[: n["heldout_truefalse"]])
        if "heldout_sentiment" in self.rows:
            out["heldout_sentiment"] = _hash(self.rows["heldout_sentiment"][: n["heldout_sentiment"]])
        return out

    def words_hash(self) -> str | None:
        return None if self.answer_words is None else _hash(self.answer_words)

    def describe(self) -> str:
        """One line: name, source, what is the concept's own and what is a default."""
        parts = [f"{len(self.all_pairs)} pairs (enough for {self.max_seeds()} seeds)"]
        parts.append(
            f"{len(self.calibration_pool)} calibration prompts"
            + ("" if "calibration.jsonl" in self.own else " (library default)")
        )
        parts.append(f"{len(self.heldout_pool)} held-out prompts" + ("" if "heldout.jsonl" in self.own else " (library default)"))
        parts.append(f"{len(self.probe_pool)} probes" if self.probe_pool is not None else "no probes (target axis not measured)")
        return f"concept {self.name} ({self.source}): " + ", ".join(parts)

    # ---- checks that need the tokenizer -------------------------------------------------------------------------

    def check_for(self, lm, horizon: int, sets: dict[str, int] | None = None) -> None:
        """With the model's tokenizer: every prompt plus `horizon` generated tokens fits its context, and every answer
        word has a first token in its vocabulary. One ConceptError naming the file, line (id) and field."""
        groups: list[tuple[str, list[Prompt]]] = [("pairs.jsonl", [q for p in self.all_pairs for q in (p.positive, p.negative)])]
        groups.append(("calibration.jsonl", list(self.calibration_pool)))
        groups.append(("heldout.jsonl", self.heldout((sets or {}).get("heldout_generic"))))
        if self.probe_pool is not None:
            groups.append(("probes.jsonl", self.probes((sets or {}).get("heldout_sentiment")) or []))
        for fname, ps in groups:
            own = fname in self.own or fname == "pairs.jsonl"
            path = (self.pairs_file or Path(self.source) / fname) if own else None  # the library's files: no line
            where = self.label(fname) if own else f"the library's {fname}"
            room = 0 if fname == "pairs.jsonl" else horizon  # pairs are read at their last token, not rolled out
            check_context(lm, ps, room, where, path, pairs=fname == "pairs.jsonl")
        if self.answer_words is not None:
            check_words(lm.tokenizer, self.answer_words, self.label("words.json"), lm.id)
        if self.answers is not None:
            pos, neg = self.answers
            check_words(lm.tokenizer, {"positive": [pos], "negative": [neg]}, self.label("concept.json"), lm.id)


def check_context(lm, prompts: list[Prompt], room: int, where: str, path: str | Path | None, pairs: bool = False) -> None:
    """Every prompt plus `room` generated tokens fits the model's context; else one ConceptError naming `where`, the
    line of `path` that holds the prompt (when a file is given) and its id."""
    for p in prompts:
        n = len(lm.encode([lm.format(p)])[0])
        if n + room > lm.max_positions:
            line = line_of(path, p.id, pairs=pairs) if path is not None else None
            raise ConceptError(
                f"{where}{f' line {line}' if line else ''} id {p.id!r}: {n} tokens plus {room} generated exceed {lm.id}'s "
                f"context of {lm.max_positions} positions; shorten it or lower the window"
            )


def check_words(tokenizer, words: dict[str, list[str]], where: str, model: str) -> None:
    """Every answer word has at least one spelling (' w', 'w', ' W', 'W') whose first token is a real vocabulary entry
    (not the unknown token); each side keeps at least one first token the other side does not share."""
    unk = getattr(tokenizer, "unk_token_id", None)
    firsts: dict[str, set[int]] = {}
    for side, ws in words.items():
        firsts[side] = set()
        for w in ws:
            ids = first_tokens(tokenizer, word_variants(w)) - {unk}
            if not ids:
                raise ConceptError(f"{where}: {side} word {w!r} has no token in {model}'s vocabulary; replace it")
            firsts[side] |= ids
    kept = dict(zip(("positive", "negative"), apart(firsts["positive"], firsts["negative"]), strict=True))
    for side, ids in kept.items():
        if not ids:
            raise ConceptError(
                f"{where}: every {side} word starts with a token the other side shares in {model}'s vocabulary, so the "
                "target axis cannot tell the sides apart; use words that begin differently"
            )


def extraction_pairs(seed: int, k: int = PAIRS_PER_DRAW) -> list[Pair]:
    """Seed s's k contrast pairs of the built-in sentiment concept (the study's draw)."""
    return Concept.load(DEFAULT).pairs(seed, k)
