"""Inputs: what a researcher already holds -> the library's types, in one place (every public verb calls these).

- a model: an `LM`, or a loaded Hugging Face `(model, tokenizer)` (`as_lm`; wrapped, never copied: a bf16 model on
  a GPU stays bf16 on that GPU);
- prompts: `str` (a user message, chat-templated where the model has a template), a chat message list
  `[{"role": "system" | "user" | "assistant", "content": ...}]` (an optional system message, one user message,
  an optional final assistant message as the start of the reply) or a `Prompt` (`as_prompts`);
- contrast pairs: `(positive, negative)` tuples, objects with `.positive` and `.negative` (repeng's DatasetEntry), or
  `Pair` (`as_pairs`). A side given as `str` is a full text used as is (the concept folders' full-text form and what
  steering-vectors and repeng read: their pairs are already-formatted strings); a message list is chat-templated.

Bad input is one ValueError naming what was given and what is accepted, raised before any model runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .models import LM, _what, wrap
from .prompts import Pair, Prompt

ROLES = ("system", "user", "assistant")


def as_lm(x: Any) -> LM:
    """An `LM`, or `(model, tokenizer)` as loaded with transformers -> LM (the same model object, not a copy)."""
    if isinstance(x, LM):
        return x
    if isinstance(x, (tuple, list)) and len(x) == 2 and hasattr(x[0], "config") and callable(x[1]):
        return wrap(*x)
    if hasattr(x, "config") and hasattr(x, "forward"):
        raise ValueError(
            f"got a {type(x).__name__} without its tokenizer: pass (model, tokenizer) or isokl.LM.wrap(model, tokenizer)"
        )
    if isinstance(x, str):
        raise ValueError(f"got the string {x!r}: load the model first, lm = isokl.load({x!r}), or pass (model, tokenizer)")
    raise ValueError(f"got {_what(x)}: pass an isokl LM, (model, tokenizer) or isokl.LM.wrap(model, tokenizer)")


def _from_messages(msgs: list, where: str) -> Prompt:
    roles = []
    for m in msgs:
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: a chat message needs a role in {ROLES} and a string content, got {_what(m)}")
        roles.append(m["role"])
    by = {m["role"]: m["content"] for m in msgs}
    shape = [r for r in roles if r != "system"]
    if (
        roles.count("system") > 1
        or (roles.count("system") == 1 and roles[0] != "system")
        or shape not in (["user"], ["user", "assistant"])
    ):
        raise ValueError(
            f"{where}: messages {roles}: isokl takes an optional system message, one user message and an optional final "
            "assistant message (the start of the reply); give a longer conversation as one formatted string"
        )
    return Prompt(user=by["user"], system=by.get("system"), assistant_prefix=by.get("assistant"))


def _is_messages(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(m, Mapping) for m in x)


def as_prompt(x: Any, where: str = "prompt", text: bool = False) -> Prompt:
    """One prompt: `Prompt`, chat message list, or str (a user message; with text=True a full text used as is)."""
    if isinstance(x, Prompt):
        return x
    if isinstance(x, str):
        if not x.strip():
            raise ValueError(f"{where}: an empty string")
        return Prompt("", text=x) if text else Prompt(user=x)
    if _is_messages(x):
        return _from_messages(list(x), where)
    raise ValueError(f"{where}: got {_what(x)}; give a str, a chat message list or an isokl Prompt")


def as_prompts(xs: Any, what: str = "prompts") -> list[Prompt]:
    """Prompts: a list of str / message lists / Prompt; one str or one message list is one prompt."""
    if isinstance(xs, (str, Prompt)) or _is_messages(xs):
        xs = [xs]
    if not isinstance(xs, Iterable) or isinstance(xs, (bytes, Mapping)):
        raise ValueError(f"{what}: got {_what(xs)}; give a list of strings, chat message lists or isokl Prompts")
    out = [as_prompt(x, f"{what}[{i}]") for i, x in enumerate(xs)]
    if not out:
        raise ValueError(f"{what}: empty; give at least one prompt")
    return out


def as_pair(x: Any, where: str = "pair") -> Pair:
    if isinstance(x, Pair):
        return x
    if isinstance(x, (tuple, list)) and len(x) == 2 and not _is_messages(x):
        pos, neg = x
    elif hasattr(x, "positive") and hasattr(x, "negative"):  # repeng's DatasetEntry and similar
        pos, neg = x.positive, x.negative
    else:
        raise ValueError(
            f"{where}: got {_what(x)}; give a (positive, negative) tuple of strings or chat message lists, or a Pair"
        )
    return Pair(as_prompt(pos, f"{where} positive", text=True), as_prompt(neg, f"{where} negative", text=True))


def as_pairs(xs: Any, what: str = "pairs") -> list[Pair]:
    """Contrast pairs: a list of (positive, negative) tuples, DatasetEntry-like objects or `Pair`."""
    if isinstance(xs, (str, Pair, Mapping)) or not isinstance(xs, Iterable):
        raise ValueError(f"{what}: got {_what(xs)}; give a list of (positive, negative) tuples or Pairs")
    out = [as_pair(x, f"{what}[{i}]") for i, x in enumerate(xs)]
    if not out:
        raise ValueError(f"{what}: empty; give at least one contrast pair")
    return out
