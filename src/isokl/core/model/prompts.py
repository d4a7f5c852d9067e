"""Prompts: `Prompt` and `Pair` values, the library's generic pools (data/*.jsonl) and the seeded draws of DESIGN.md
section 4 (no torch).

Decoding is greedy, so a seed varies the *data*: seed s draws 4 contrast pairs from a
pool of >= 32 and 4 calibration prompts from a pool of >= 24. Held-out sets are fixed
and disjoint from both pools, so seeds stay comparable. A concept's own files (pairs,
probes, words, optionally its own prompts) are read by `concept`, which builds on this
module (the built-in sentiment pairs: `concept.extraction_pairs`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np

POOLS = ("calibration", "heldout_generic", "heldout_truefalse")  # the library's pools: defaults of every concept


@dataclass(frozen=True)
class Prompt:
    user: str
    system: str | None = None
    assistant_prefix: str | None = None
    id: str = ""
    text: str | None = None  # full text, used as is (no chat template): a full-text contrast pair's side


@dataclass(frozen=True)
class Pair:
    """A contrast pair: same user message and assistant prefix, only the persona differs (or two full texts)."""

    positive: Prompt
    negative: Prompt
    id: str = ""


@cache
def _rows(pool: str) -> tuple[dict, ...]:
    if pool not in POOLS:
        raise ValueError(f"unknown prompt pool {pool!r}; valid: {', '.join(POOLS)}")
    text = (files("isokl") / "data" / f"{pool}.jsonl").read_text()
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def library_pool(name: str) -> list[Prompt]:
    """A library pool of single prompts (calibration or a held-out set)."""
    return [Prompt(r["user"], r.get("system"), r.get("assistant_prefix"), r["id"]) for r in _rows(name)]


def library_rows(name: str) -> list[dict]:
    """A library pool's raw rows, for fields beyond the prompt (e.g. the true/false answer) and for hashing."""
    return [dict(r) for r in _rows(name)]


def pool(name: str) -> list[Prompt]:
    """A library pool of single prompts (`library_pool`); a concept's probes come from `concept.Concept.probes`."""
    return library_pool(name)


def word_variants(word: str) -> list[str]:
    """The spellings of an answer word as it may follow text: ' word', 'word', ' Word', 'Word'."""
    return [" " + word, word, " " + word.capitalize(), word.capitalize()]


def first_tokens(tokenizer, spellings) -> set[int]:
    """The first token of each spelling as the tokenizer encodes it without special tokens (empty encodings skipped)."""
    encoded = (tokenizer(w, add_special_tokens=False)["input_ids"] for w in spellings)
    return {ids[0] for ids in encoded if ids}


def apart(a: set[int], b: set[int]) -> tuple[set[int], set[int]]:
    """The first tokens of two answer sides without those both share: a token both start with (a bare space in a
    byte-level vocabulary) commits to neither side. The one rule of branch_pmass, the target axis and the word check."""
    shared = a & b
    return a - shared, b - shared


def draw(items: list, k: int, seed: int, salt: str) -> list:
    """k items without replacement; the salt keeps the pair draw and the calibration draw independent."""
    if k > len(items):
        raise ValueError(f"cannot draw {k} from a pool of {len(items)}")
    rng = np.random.default_rng([seed, int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)])
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))]


def calibration_prompts(seed: int, k: int = 4) -> list[Prompt]:
    """Seed s's k prompts of the library's calibration pool."""
    return draw(library_pool("calibration"), k, seed, "calibration")


def prompt_hash(prompts: list[Prompt]) -> str:
    """Short content hash, stored in a Vector's provenance (a full-text prompt adds its text)."""
    blob = json.dumps(
        [[p.system, p.user, p.assistant_prefix] + ([p.text] if p.text is not None else []) for p in prompts]
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
