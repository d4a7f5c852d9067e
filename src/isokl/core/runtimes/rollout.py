"""Rollout and KL: prompts (token ids) + Vector + coefficients c -> greedy rollouts with per-token KL.

One batched, left-padded, KV-cached greedy loop serves several coefficients at once: rows
[k*n + i] are prompt i steered at coefficient k (`hooks.Layout`), and each steered row has a *base twin*
(c = 0) that is teacher-forced on the steered row's tokens. So at each step t the batch
yields both next-token distributions of DESIGN.md section 3 — steered p_t from the
rollout itself, base q_t on the same prefix — and KL(p_t || q_t) is reduced to one
number per row before the next step: memory stays O(rows x vocab), flat in T, and the
[n t vocab] logits are never stored. The twin rows cost one extra batch row each, not
a second pass over the prompts.

Greedy means argmax: no sampling, no repetition penalty, and no `generation_config`
is consulted (DESIGN.md section 7). Every end-of-turn id counts as EOS; the step that
emits EOS is scored, later steps are masked out (`valid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from ..formats.vector import Vector
from ..model.hooks import Layout, steer_rows
from ..model.models import LM, forward, left_pad, new_cache, pad_id
from ..stats.kl import KLStats, chunk_rows, kl_rows, kl_stats, score_step  # noqa: F401  (re-exported)
from ..stats.statistic import P95


class NonFiniteKL(FloatingPointError):
    pass


@dataclass(frozen=True)
class BasePrefill:
    """The base model's KV cache and last-position logits for n left-padded prompts: what every base twin
    starts from. It does not depend on the dose, so one is built per prompt set and shared by all doses of
    a rollout and all rollouts of a calibration (`prefill_base`)."""

    seqs: tuple[tuple[int, ...], ...]
    keys: tuple[torch.Tensor, ...]  # per layer [n heads S head_dim]
    values: tuple[torch.Tensor, ...]
    logits: torch.Tensor  # [n V] at the last prompt position


@torch.no_grad()
def prefill_base(lm: LM, seqs: list[list[int]]) -> BasePrefill:
    ids, mask, pos = left_pad(seqs, pad_id(lm), lm.device)
    cache = new_cache(lm.model)
    logits = forward(lm.model, ids, mask, pos, cache, keep=1)[:, -1]
    return BasePrefill(
        tuple(tuple(s) for s in seqs),
        tuple(layer.keys for layer in cache.layers),
        tuple(layer.values for layer in cache.layers),
        logits,
    )


def _append_rows(cache, base: BasePrefill, repeat: int) -> None:
    """Append base's prompt rows, `repeat` times over, below the rows already in `cache` (same padded width)."""
    for layer, k, v in zip(cache.layers, base.keys, base.values, strict=True):
        layer.keys = torch.cat([layer.keys, k.repeat(repeat, 1, 1, 1)])
        layer.values = torch.cat([layer.values, v.repeat(repeat, 1, 1, 1)])


@dataclass(frozen=True)
class Rollout:
    """Per steered row r = k*n + i (dose k, prompt i); t = generated position 0..T-1."""

    layout: Layout  # row k*n + i = prompt i at coefficient k (doses grouped in vector blocks)
    tokens: torch.Tensor  # [r t] greedy tokens of the steered rows
    valid: torch.Tensor  # [r t] bool, False after the row emitted EOS (or its block stopped early)
    kl: torch.Tensor | None  # [r t] KL(steered || base) per token, nats (None without base twins)
    logp: torch.Tensor  # [r t] log p_steered(chosen token)
    logp_base: torch.Tensor | None  # [r t] log p_base(chosen token): base NLL of the steered rollout
    steps: int  # tokens actually generated (< T when every row ended, or `stop_above` decided all doses)
    stopped: tuple[bool, ...] = ()  # per vector block: cut short by `stop_above`; the KL of its later tokens is unknown

    @property
    def coeffs(self) -> tuple[float, ...]:
        return self.layout.coeffs

    def rows(self, k: int) -> slice:
        return self.layout.rows(k)

    def token_kl(self, k: int) -> torch.Tensor:
        """The KL of every valid token of coefficient k's rows, in row order."""
        if self.kl is None:
            raise ValueError("this rollout has no base twins (score_base=False or every dose 0): no KL")
        sl = self.rows(k)
        return self.kl[sl][self.valid[sl]]

    def stats(self, k: int, T: int | None = None) -> KLStats:
        """The pooled statistic of dose k over the first T tokens (all by default): greedy decoding makes
        the first T tokens of a longer rollout the T-token rollout itself."""
        if self.kl is None:
            raise ValueError("this rollout has no base twins (score_base=False or every dose 0): no KL to pool")
        sl = self.rows(k)
        stopped = bool(self.stopped) and self.stopped[self.layout.block_of(k)]
        return kl_stats(self.kl[sl, :T], self.valid[sl, :T], self.coeffs[k], stopped=stopped)

    def part(self, j: int) -> Rollout:
        """Vector block j of a joint rollout (`rollout_many`) as the rollout of that vector alone: its doses' rows, in
        its own layout (rows k*n + i for its doses k)."""
        lay = self.layout
        sl = lay.block(j)
        pick = lambda x: None if x is None else x[sl]
        sub = Layout(tuple(lay.coeffs[k] for k in lay.doses(j)), lay.n)
        stopped = (self.stopped[j],) if self.stopped else ()
        return Rollout(
            sub, self.tokens[sl], self.valid[sl], pick(self.kl), self.logp[sl], pick(self.logp_base), self.steps, stopped
        )

    def nonfinite(self, j: int = 0) -> str | None:
        """Where vector block j's KL is not finite (the first such token), or None."""
        if self.kl is None:
            return None
        sl = self.layout.block(j)
        bad = ~torch.isfinite(self.kl[sl]) & self.valid[sl]
        if not bad.any():
            return None
        i, t = (int(x) for x in bad.nonzero()[0])
        row = sl.start + i
        return (
            f"KL is {self.kl[row, t].item()} at prompt {row % self.layout.n}, token {t}, c = {self.coeffs[row // self.layout.n]:g}: "
            "the steered model puts mass where the base model has none (or the model produced NaN); lower the dose or "
            "check the model dtype"
        )


def check_length(lm: LM, seqs: list[list[int]], T: int) -> None:
    if T < 1:
        raise ValueError(f"the window T must be at least 1 generated token, got {T}")
    if not seqs:
        raise ValueError("no prompts to roll out: give at least one")
    longest = max(len(x) for x in seqs)
    if longest + T > lm.max_positions:
        raise ValueError(
            f"a prompt of {longest} tokens plus {T} generated tokens exceeds {lm.id}'s context of "
            f"{lm.max_positions} positions: shorten the prompt or lower the window T"
        )
    if min(len(x) for x in seqs) == 0:
        raise ValueError("empty prompt: every prompt needs at least one token")


def rollout(
    lm: LM,
    seqs: list[list[int]],
    T: int,
    vector: Vector | None = None,
    coeffs: tuple[float, ...] = (0.0,),
    score_base: bool = True,
    stop_above: float | None = None,
    draft: torch.Tensor | None = None,
    base: BasePrefill | None = None,
) -> Rollout:
    """Greedy T-token rollouts of every prompt at every coefficient in one batch; with score_base, per-token KL.

    stop_above: stop early once every dose has enough KL values >= stop_above that its
    pooled p95 over the full n x T window must exceed it (`P95.must_exceed`): the solver
    only needs to know such a dose overshoots, and overshooting doses decide fast.
    draft: [k*n, L] guessed tokens of the steered rows (e.g. the rollout of a nearby dose).
    While every live row's argmax equals the draft, the next drafted tokens are fed ahead in
    one pass (4, then 8, 16, ... tokens), which checks them all; at the first miss the
    cache is cropped back and decoding goes on step by step. The result is the plain greedy
    rollout (to float rounding of a several-token vs a one-token forward); a draft that
    holds replaces T sequential steps by a few passes, one that misses at once costs a
    pass of 4 tokens.
    base: the base twins' prompt prefill (`prefill_base` of the same seqs), reused across calls;
    without it the rollout builds one (n rows, shared by all k doses).
    """
    vectors = (vector,) if vector is not None else ()
    layout = Layout(tuple(coeffs), len(seqs))
    return _decode(lm, seqs, T, vectors, layout, DecodeOptions(score_base, stop_above, draft, base))[0]


def rollout_many(
    lm: LM,
    seqs: list[list[int]],
    T: int,
    vectors: Sequence[Vector],
    coeffs: Sequence[Sequence[float]],
    *,
    stop_above: float | None = None,
    draft: torch.Tensor | None = None,
    base: BasePrefill | None = None,
    check_finite: bool = True,
) -> Rollout:
    """`rollout` of several vectors in one batch: vector j at its doses coeffs[j] (any methods, any layers), each
    steered row with its base twin. Row layout: `Layout` with one block per vector. With stop_above, each vector's
    block stops on its own (its later tokens unscored, as in its own rollout; the batch runs until every block has
    stopped or ended). check_finite=False leaves a non-finite KL for the caller (`Rollout.nonfinite(j)`), so one
    vector's failure does not discard the others' rows."""
    if len(vectors) != len(coeffs) or not vectors:
        raise ValueError(f"one tuple of doses per vector: got {len(vectors)} vectors and {len(coeffs)} dose tuples")
    layout = Layout.for_vectors(coeffs, len(seqs))
    opts = DecodeOptions(True, stop_above, draft, base, check_finite)
    return _decode(lm, seqs, T, tuple(vectors), layout, opts)[0]


@dataclass(frozen=True)
class DecodeOptions:
    """How one decode runs, passed down whole from the entry points (`rollout`, `rollout_many`, `fork_rollout`).

    score_base: add the base twins (KL, base NLL); stop_above: the early stop of an overshooting block; draft: the
    tokens of a nearby dose fed ahead; base: a prefill of the twins' prompts to reuse; check_finite: raise NonFiniteKL
    on a non-finite KL (False: leave it to the caller, `Rollout.nonfinite`)."""

    score_base: bool = True
    stop_above: float | None = None
    draft: torch.Tensor | None = None
    base: BasePrefill | None = None
    check_finite: bool = True


@torch.no_grad()
def _decode(lm: LM, seqs: list[list[int]], T: int, vectors: tuple[Vector, ...], layout: Layout, opts: DecodeOptions):
    """The entry points' loop -> (Rollout, (KV cache, attention mask, padded prompt width)) for `Forks`. vectors: none
    (the base model), one (steering every row), or one per block of `layout`."""
    check_length(lm, seqs, T)
    for v in vectors:
        v.check_fits(lm.id, lm.n_layers, lm.d_model)
    if len(vectors) > 1 and len(vectors) != len(layout.blocks):
        raise ValueError(f"{len(vectors)} vectors for a layout of {len(layout.blocks)} blocks")
    dec = _Decoder(lm, seqs, T, vectors, layout, opts)
    with dec.steering:
        for t in range(T):
            if dec.score(t):
                break
            dec.feed(t)
    ro = dec.rollout()
    if ro.kl is not None and opts.check_finite:
        for j in range(len(layout.blocks)):
            msg = ro.nonfinite(j)
            if msg is not None:
                raise NonFiniteKL(f"{vectors[j].label}: {msg}" if len(vectors) > 1 else msg)
    return ro, (dec.cache, dec.mask, dec.width)


class _Draft:
    """The drafted tokens of a decode and what was fed ahead of them: while every live row's argmax equals the draft,
    `size` more drafted tokens go into one pass (4, then doubling); `ahead` holds the logits after the tokens fed
    beyond the current step. At the first miss the draft is dropped and decoding goes on step by step."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens  # [rows, length] drafted tokens of the steered rows
        self.length = tokens.shape[1]  # 0: no draft, or it left the greedy path
        self.ahead: torch.Tensor | None = None  # [batch, m, vocab] logits after tokens already fed past step t
        self.pass_size = 4  # drafted tokens per verifying pass; doubles after each

    def holds(self, t: int, live: torch.Tensor, chosen: torch.Tensor, scored: torch.Tensor) -> bool:
        """Did every live row still scored at step t choose the drafted token t? (Ended rows' tokens are not scored.)"""
        return self.length > t and bool((chosen == self.tokens[live, t])[scored].all())

    def take_ahead(self) -> torch.Tensor:
        """The logits after the next token already fed (a drafted pass ran past it)."""
        assert self.ahead is not None
        logits, self.ahead = self.ahead[:, 0], (self.ahead[:, 1:] if self.ahead.shape[1] > 1 else None)
        return logits


class _Decoder:
    """One batched greedy decode (`_decode`): the steered rows (layout order) and, with twins, their base twins below
    them, in one KV cache. `score(t)` turns the logits of step t into tokens, KL and log-probs; `feed(t)` runs the
    forward that gives step t + 1's logits, several drafted tokens at once while the draft holds (`_Draft`). With
    several vectors, rows that have ended (EOS, or their block stopped early) leave the batch (`_drop_ended`)."""

    def __init__(self, lm: LM, seqs, T: int, vectors, layout: Layout, opts: DecodeOptions):
        self.lm, self.T, self.vectors, self.layout = lm, T, vectors, layout
        self.twins = opts.score_base and bool(vectors) and any(c != 0 for c in layout.coeffs)
        self.row_coeffs = layout.c_per_row()  # [rows]
        rows = self.rows = len(self.row_coeffs)
        ids, self.mask, pos = left_pad(layout.repeat(seqs) * (2 if self.twins else 1), pad_id(lm), lm.device)
        dev = lm.device
        self.eos = torch.tensor(lm.eos_ids or [-1], device=dev)
        self.tokens = torch.zeros((rows, T), dtype=torch.long, device=dev)
        self.valid = torch.ones((rows, T), dtype=torch.bool, device=dev)
        self.kl = torch.zeros((rows, T), dtype=torch.float32, device=dev)  # filled with twins only
        self.logp = torch.zeros((rows, T), dtype=torch.float32, device=dev)
        self.logp_base = torch.zeros((rows, T), dtype=torch.float32, device=dev)  # filled with twins only
        self.done = torch.zeros(rows, dtype=torch.bool, device=dev)  # ended (EOS) or its block stopped: not scored later
        self.stop_above = opts.stop_above if self.twins else None
        self.stop_count = P95.must_exceed(layout.n * T) if self.stop_above is not None else 0  # values >= stop_above
        self.stopped = [False] * len(layout.blocks)
        self.steps = T
        self.cache = new_cache(lm.model)
        self.width = ids.shape[1]  # the padded prompts
        self.fed = 0  # generated tokens in the cache
        n_draft = draft_length(lm, opts.draft, rows, self.width, T) if opts.draft is not None else 0
        self.draft = _Draft(opts.draft[:, :n_draft].to(dev) if opts.draft is not None else self.tokens[:, :0])
        base = opts.base
        if self.twins and (base is None or base.seqs != tuple(tuple(x) for x in seqs)):
            base = prefill_base(lm, seqs)
        self.live = torch.arange(rows, device=dev)  # the steered rows still in the batch, ascending; twins follow alike
        self.shrink = len(vectors) > 1
        parts = _parts(vectors, layout, self.live)
        with steer_rows(lm.model, parts, self.row_coeffs):  # the prompts of the steered rows
            logits = forward(lm.model, ids[:rows], self.mask[:rows], pos[:rows], self.cache, keep=1)[:, -1]
        if self.twins:  # base twins start from the shared base prefill
            assert base is not None  # built just above
            _append_rows(self.cache, base, layout.k)
            logits = torch.cat([logits, base.logits.repeat(layout.k, 1)])
        self.logits = logits
        self.last_pos = pos[:, -1:]  # generated token j sits at position last_pos + 1 + j
        self.chosen = self.tokens[:, 0]  # the live rows' tokens of the current step
        self.steering = ExitStack()
        self.steering.enter_context(steer_rows(lm.model, parts, self._batch_coeffs()))

    def _batch_coeffs(self) -> torch.Tensor:
        """c of every batch row: the live steered rows', then their base twins' (c = 0)."""
        c = self.row_coeffs[self.live.cpu()]
        return torch.cat([c, torch.zeros(len(c), dtype=torch.float64)]) if self.twins else c

    def score(self, t: int) -> bool:
        """Step t's tokens and scores from the current logits; True when decoding ends here."""
        live = self.live
        chosen, lp, kl_t, logq_t = score_step(self.logits, len(live), self.twins)  # greedy = argmax
        self.tokens[live, t], self.logp[live, t] = chosen, lp
        self.valid[:, t] = ~self.done
        if kl_t is not None and logq_t is not None:  # with twins
            self.kl[live, t], self.logp_base[live, t] = kl_t, logq_t
        self.done[live] = self.done[live] | torch.isin(chosen, self.eos)
        self.chosen = chosen
        if self.stop_above is not None:
            self._stop_blocks(t, self.stop_above)
        if t == self.T - 1 or bool(self.done.all()):
            self.valid[:, t + 1 :] = False
            self.steps = t + 1
            if self.fed > self.steps - 1:  # drafted tokens fed beyond the last step: the cache holds tokens 0..steps-2
                self.cache.crop(-(self.fed - (self.steps - 1)))
                self.mask = self.mask[:, : self.width + self.steps - 1]
            return True
        if self.shrink and bool(self.done[live].any()):
            self._drop_ended()
        return False

    def _stop_blocks(self, t: int, stop_above: float) -> None:
        """A block whose doses all have `stop_count` KL values >= stop_above (they overshoot) stops: its later tokens
        are not scored."""
        lay = self.layout
        big = lay.split((self.kl[:, : t + 1] >= stop_above) & self.valid[:, : t + 1]).reshape(lay.k, -1).sum(-1)
        for j in range(len(self.stopped)):
            if not self.stopped[j] and bool((big[lay.doses(j).start : lay.doses(j).stop] >= self.stop_count).all()):
                self.stopped[j] = True
                self.done[lay.block(j)] = True

    def _drop_ended(self) -> None:
        """Rows that have ended leave the batch: their cache rows, mask, positions and pending logits; the hooks are
        set again for the rows that stay."""
        keep = (~self.done[self.live]).nonzero()[:, 0]  # positions in the batch of the steered rows that stay
        sel = torch.cat([keep, keep + len(self.live)]) if self.twins else keep
        self.live, self.chosen = self.live[keep], self.chosen[keep]
        self.cache.batch_select_indices(sel)
        self.mask, self.last_pos = self.mask[sel], self.last_pos[sel]
        if self.draft.ahead is not None:
            self.draft.ahead = self.draft.ahead[sel]
        self.steering.close()
        self.steering.enter_context(steer_rows(self.lm.model, _parts(self.vectors, self.layout, self.live), self._batch_coeffs()))

    def feed(self, t: int) -> None:
        """The logits of step t + 1: from a drafted pass already run while the draft holds, else one forward of token t
        (plus, while a draft holds, the next drafted tokens)."""
        live, chosen, draft = self.live, self.chosen, self.draft
        hit = draft.holds(t, live, chosen, self.valid[live, t])
        if draft.ahead is not None:  # the cache already holds draft[t], fed ahead, and `ahead` the logits after it
            if hit:
                self.logits = draft.take_ahead()
                return
            self.cache.crop(-(self.fed - t))  # drop draft[t:] from the cache: it holds tokens 0..t-1 again
            self.mask, self.fed, draft.ahead = self.mask[:, : self.width + t], t, None
        if not hit:
            draft.length = 0  # the draft left the greedy path: decode step by step from here on
        batch = (2 if self.twins else 1) * len(live)
        size = min(draft.pass_size, draft.length - t, max(2, 2**28 // (batch * self.logits.shape[-1])))
        if size >= 2:  # token t plus the next size - 1 drafted tokens in one pass
            step_ids = torch.cat([chosen[:, None], draft.tokens[live, t + 1 : t + size]], dim=-1)
            draft.pass_size *= 2
        else:
            step_ids = chosen[:, None]
        ids = torch.cat([step_ids, step_ids]) if self.twins else step_ids  # base twins are teacher-forced
        m = ids.shape[1]
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :m])], dim=-1)
        positions = self.last_pos + 1 + t + torch.arange(m, device=self.last_pos.device)
        out = forward(self.lm.model, ids, self.mask, positions, self.cache, keep=m)
        self.fed = t + m
        self.logits, draft.ahead = out[:, 0], (out[:, 1:] if m > 1 else None)

    def rollout(self) -> Rollout:
        kl, logp_base = (self.kl, self.logp_base) if self.twins else (None, None)
        return Rollout(self.layout, self.tokens, self.valid, kl, self.logp, logp_base, self.steps, tuple(self.stopped))


def _parts(vectors: tuple[Vector, ...], layout: Layout, act: torch.Tensor) -> list[tuple[Vector, slice]]:
    """Which batch rows each vector steers, the batch holding the steered rows `act` (ascending) first: one vector steers
    every row (its base twins at c = 0), several a block of rows each (twins untouched)."""
    if len(vectors) <= 1:
        return [(vectors[0], slice(None))] if vectors else []
    parts, at = [], 0
    for j, v in enumerate(vectors):
        sl = layout.block(j)
        m = int(((act >= sl.start) & (act < sl.stop)).sum())
        if m:
            parts.append((v, slice(at, at + m)))
        at += m
    return parts


def draft_length(lm: LM, draft: torch.Tensor, r: int, width: int, T: int) -> int:
    """How many draft tokens may be used: at most T - 1 and the draft's length; 0 where a
    sliding-window layer could evict the prompt before drafted tokens are cropped."""
    if draft.shape[0] != r:
        raise ValueError(f"draft has {draft.shape[0]} rows, the rollout has {r} steered rows")
    n_draft = min(int(draft.shape[1]), T - 1)
    window = getattr(lm.model.config, "sliding_window", None)
    return 0 if window and width + n_draft >= window - 1 else max(n_draft, 0)


def evaluate(
    lm: LM,
    seqs: list[list[int]],
    vector: Vector,
    coeffs: tuple[float, ...],
    T: int,
    stop_above: float | None = None,
    draft: torch.Tensor | None = None,
    base: BasePrefill | None = None,
) -> list[KLStats]:
    """One batched evaluation of several coefficients: a rollout with base twins -> KLStats per coefficient."""
    ro = rollout(lm, seqs, T, vector, coeffs, stop_above=stop_above, draft=draft, base=base)
    if ro.kl is None:  # every coefficient 0: KL is exactly 0
        return [kl_stats(torch.zeros_like(ro.logp[ro.rows(i)]), ro.valid[ro.rows(i)], c) for i, c in enumerate(coeffs)]
    return [ro.stats(i) for i in range(len(coeffs))]
