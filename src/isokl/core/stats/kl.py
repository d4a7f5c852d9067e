"""KL: one decode step's logits -> greedy token, log-probs and KL(steered || base) per row (`score_step`, in chunks that
stay in cache), and a dose's KL values -> the pooled statistic (`kl_stats` -> `KLStats`). The arithmetic of
`rollout`, apart from its decode loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .statistic import P95


def kl_rows(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probs [r V] -> [r]. Terms with p = 0 are 0 (guards -inf - -inf = NaN)."""
    p = lp.exp()
    kl = torch.where(p > 0, p * (lp - lq), torch.zeros((), dtype=lp.dtype, device=lp.device)).sum(-1)
    broken = torch.isnan(lp).any(-1) | torch.isnan(lq).any(-1)  # NaN logits must not read as p = 0
    return torch.where(broken, torch.full_like(kl, float("nan")), kl)


def chunk_rows(vocab: int, device) -> int:
    """Rows of [rows vocab] float32 scored together: ~2 MiB on CPU (stays in cache: 3x faster than one
    pass over all rows at a 262k vocabulary), up to 256 MiB elsewhere (per-call overhead dominates there)."""
    budget = 2**19 if torch.device(device).type == "cpu" else 2**26
    return max(1, budget // vocab)


def score_step(logits: torch.Tensor, r: int, twins: bool):
    """One step's logits [rows V] (steered rows first, then their base twins) -> greedy token, log p of it,
    and with twins KL(p || q) and log q of it; each [r]. Works through the rows in chunks so that memory
    is O(chunk x V) and each chunk stays in cache.

    KL = sum p (x - y) - lse(x) + lse(y) for logits x (steered) and y (base). Where that is not finite
    (a logit of -inf in both rows gives -inf - -inf; or NaN logits), those rows are redone term by term with
    `kl_rows`, which counts p = 0 terms as 0 and keeps NaN as NaN.
    """
    step = chunk_rows(logits.shape[-1], logits.device)
    nxt, logp = torch.empty(r, dtype=torch.long, device=logits.device), torch.empty(r, device=logits.device)
    kl, logq = torch.empty(r, device=logits.device), torch.empty(r, device=logits.device)  # filled with twins only
    for a in range(0, r, step):
        b = min(r, a + step)
        x = logits[a:b].float()
        lx = torch.logsumexp(x, -1)
        n = x.argmax(-1)
        nxt[a:b], logp[a:b] = n, x.gather(-1, n[:, None])[:, 0] - lx
        if twins:
            y = logits[r + a : r + b].float()
            ly = torch.logsumexp(y, -1)
            k = torch.linalg.vecdot(torch.exp(x - lx[:, None]), x - y) - lx + ly
            odd = ~torch.isfinite(k)
            if bool(odd.any()):  # only those rows: the others keep their formula (and rounding) whatever shares the chunk
                k[odd] = kl_rows(x[odd] - lx[odd, None], y[odd] - ly[odd, None])
            kl[a:b], logq[a:b] = k, y.gather(-1, n[:, None])[:, 0] - ly
    return nxt, logp, (kl if twins else None), (logq if twins else None)


@dataclass(frozen=True)
class KLStats:
    """Pooled statistic of one dose: p95 over all valid (prompt, token) KL values, plus per-token arrays."""

    c: float
    p95: float
    mean: float
    max: float
    n_values: int
    per_t_p95: tuple[float, ...]  # [t] p95 across prompts at each position (NaN where none valid)
    per_t_max: tuple[float, ...]  # [t]
    complete: bool = True  # False: the rollout stopped early and p95 is a lower bound (> target + tol)
    per_prompt: np.ndarray | None = field(default=None, compare=False, repr=False)  # [n t] KL, NaN where not scored


def kl_stats(kl: torch.Tensor, valid: torch.Tensor, c: float, stopped: bool = False) -> KLStats:
    """kl, valid: [n t] -> KLStats of the statistic (`statistic.P95`) over the valid values.

    stopped (an early-stopped rollout): p95 is the lower bound that stopped it (`P95.lower_bound`).
    """
    kl_np, ok = kl.double().cpu().numpy(), valid.cpu().numpy()
    pooled = kl_np[ok]
    if pooled.size == 0:
        raise ValueError("no valid tokens to score: every rollout ended at once (EOS as first token)")
    per_max = [float(kl_np[ok[:, t], t].max()) if ok[:, t].any() else float("nan") for t in range(kl_np.shape[1])]
    return KLStats(
        complete=not stopped,
        c=float(c),
        p95=P95.lower_bound(pooled, kl_np.size) if stopped else P95.pooled(pooled),
        mean=float(pooled.mean()),
        max=float(pooled.max()),
        n_values=int(pooled.size),
        per_t_p95=tuple(P95.per_position(kl_np, ok)),
        per_t_max=tuple(per_max),
        per_prompt=np.where(ok, kl_np, np.nan),
    )
