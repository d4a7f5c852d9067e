"""Prompts: the built-in pools (data/*.jsonl) -> `Prompt` values and the seeded draws of DESIGN.md section 4.

Decoding is greedy, so a seed varies the *data*: seed s draws 4 contrast pairs from a
pool of >= 32 and 4 calibration prompts from a pool of >= 24. Held-out sets are fixed
and disjoint from both pools, so seeds stay comparable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np

POOLS = ("pairs", "calibration", "heldout_generic", "heldout_truefalse", "heldout_sentiment")


@dataclass(frozen=True)
class Prompt:
    user: str
    system: str | None = None
    assistant_prefix: str | None = None
    id: str = ""


@dataclass(frozen=True)
class Pair:
    """A contrast pair: same user message and assistant prefix, only the persona differs."""

    positive: Prompt
    negative: Prompt
    id: str = ""


@cache
def _rows(pool: str) -> tuple[dict, ...]:
    if pool not in POOLS:
        raise ValueError(f"unknown prompt pool {pool!r}; valid: {', '.join(POOLS)}")
    text = (files("isokl") / "data" / f"{pool}.jsonl").read_text()
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def pairs() -> list[Pair]:
    return [
        Pair(
            positive=Prompt(r["user"], r["positive"], r["assistant_prefix"], r["id"] + "+"),
            negative=Prompt(r["user"], r["negative"], r["assistant_prefix"], r["id"] + "-"),
            id=r["id"],
        )
        for r in _rows("pairs")
    ]


def pool(name: str) -> list[Prompt]:
    """A pool of single prompts (calibration or a held-out set)."""
    return [Prompt(r["user"], r.get("system"), r.get("assistant_prefix"), r["id"]) for r in _rows(name)]


def sentiment_words() -> dict[str, list[str]]:
    """Positive and negative answer words for the target-axis logit (data/sentiment_words.json)."""
    return json.loads((files("isokl") / "data" / "sentiment_words.json").read_text())


def rows(name: str) -> list[dict]:
    """Raw rows, for fields beyond the prompt (e.g. the true/false answer)."""
    return [dict(r) for r in _rows(name)]


def draw(items: list, k: int, seed: int, salt: str) -> list:
    """k items without replacement; the salt keeps the pair draw and the calibration draw independent."""
    if k > len(items):
        raise ValueError(f"cannot draw {k} from a pool of {len(items)}")
    rng = np.random.default_rng([seed, int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)])
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))]


def extraction_pairs(seed: int, k: int = 4) -> list[Pair]:
    return draw(pairs(), k, seed, "pairs")


def calibration_prompts(seed: int, k: int = 4) -> list[Prompt]:
    return draw(pool("calibration"), k, seed, "calibration")


def prompt_hash(prompts: list[Prompt]) -> str:
    """Short content hash, stored in a Vector's provenance."""
    blob = json.dumps([[p.system, p.user, p.assistant_prefix] for p in prompts]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
