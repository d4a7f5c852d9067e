"""Forks: a steered greedy rollout kept open for branching off it (`fork_rollout` -> `Forks`), the decode of `rollout`
without base twins whose KV cache stays alive: `metrics.branch_pmass` forks the true/false answer off it at each
fork point t with one forward of the suffix, cropping the cache back instead of copying it.
"""

from __future__ import annotations

import math

import torch

from .formats.vector import Vector
from .model.hooks import Layout, steer
from .model.models import LM, forward
from .runtimes.rollout import DecodeOptions, Rollout, _decode


def fork_rollout(lm: LM, seqs: list[list[int]], T: int, vector: Vector | None, coeffs: tuple[float, ...]) -> Forks:
    """A steered greedy rollout (no base twins) kept open for branching off it (`Forks`)."""
    vectors = (vector,) if vector is not None else ()
    ro, (cache, mask, width) = _decode(lm, seqs, T, vectors, Layout(tuple(coeffs), len(seqs)), DecodeOptions(score_base=False))
    return Forks(lm, vector, ro, cache, mask, width)


class Forks:
    """A rollout whose KV cache stays open: `logits_after(t, suffix)` = the steered next-token logits after the
    prompt, the rollout's first t tokens and `suffix`, one forward of the suffix each. Branch points come in
    descending t, since each crops the cache back to t (no copy)."""

    def __init__(self, lm: LM, vector: Vector | None, ro: Rollout, cache, mask: torch.Tensor, width: int):
        self.lm, self.vector, self.rollout = lm, vector, ro
        self._cache, self._mask, self._width = cache, mask, width
        self._last = math.inf

    @torch.no_grad()
    def logits_after(self, t: int, suffix: list[int]) -> torch.Tensor:
        """[r V]; t <= rollout.steps (rows that ended before t are for the caller to censor)."""
        ro, lm = self.rollout, self.lm
        if not 0 <= t <= ro.steps or t > self._last:
            raise ValueError(f"fork at t = {t}: need 0 <= t <= {ro.steps} generated tokens, in descending t")
        self._last = t
        keep = min(t, ro.steps - 1)  # the cache holds the prompt and the first steps - 1 generated tokens
        extra = self._cache.get_seq_length() - (self._width + keep)
        if extra > 0:
            self._cache.crop(-extra)  # a negative argument removes tokens in every transformers 5.x API
        r = ro.tokens.shape[0]
        feed = torch.cat([ro.tokens[:, keep:t], torch.tensor(suffix, device=lm.device).expand(r, -1)], dim=-1)
        before = self._mask[:, : self._width + keep]
        mask = torch.cat([before, torch.ones_like(feed)], dim=-1)
        pos = before.sum(-1, keepdim=True) + torch.arange(feed.shape[1], device=lm.device)  # real tokens so far
        with steer(lm.model, self.vector, ro.layout.c_per_row()):
            return forward(lm.model, feed, mask, pos, self._cache, keep=1)[:, -1]
