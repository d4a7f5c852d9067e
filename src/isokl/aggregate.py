"""Aggregate: a sweep's checked CSV rows -> `Study`, every per-cell and per-(model, method) number that
Table 1, the claims and Figure 1 use (numpy; no torch).

A "cell" is (model, method, seed, window); alpha = c / c* is the dose multiple (0 = the
base model, method `base`). Per-token p95 at t = the statistic (`statistic.P95`) across
held-out prompts of the KL at token t.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .records import BASE, STUDY_METHODS, STUDY_MODELS
from .statistic import P95

BOOT = 10_000  # bootstrap resamples for the delta-logit CI (seed 0)


def _f(x) -> float:
    return float(x) if x not in ("", None) else float("nan")


def order(values, preferred):
    seen = list(dict.fromkeys(values))
    return [p for p in preferred if p in seen] + [v for v in seen if v not in preferred]


class Study:
    """Indexes the CSV rows by cell and computes every aggregate the table, figure and claims use."""

    def __init__(self, data: dict[str, list[dict]]):
        self.data = data
        self.cal = [r for r in data["calibration"]]
        self.models = order([r["model"] for r in self.cal], STUDY_MODELS)
        self.methods = order([r["method"] for r in self.cal], STUDY_METHODS)
        self.seeds = sorted({int(r["seed"]) for r in self.cal})
        self.windows = sorted({int(r["window"]) for r in self.cal})
        self.alphas = sorted({_f(r["alpha"]) for r in data["trajectory"]} - {0.0})

    def cells(self, model=None, method=None, seed=None, window=None) -> list[dict]:
        return [
            r
            for r in self.cal
            if (model is None or r["model"] == model)
            and (method is None or r["method"] == method)
            and (seed is None or int(r["seed"]) == seed)
            and (window is None or int(r["window"]) == window)
        ]

    @staticmethod
    def _key(r) -> tuple:
        return (r["model"], r["method"], r["seed"], r["window"])

    def per_t_p95(self, alpha: float) -> dict[tuple, np.ndarray]:
        """cell -> [t] p95 over prompts of per-token KL at dose `alpha`."""
        by: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in self.data["trajectory"]:
            if _f(r["alpha"]) == alpha and r["valid"] == "1":
                by[self._key(r)][int(r["t"])].append(_f(r["kl"]))
        out = {}
        for k, ts in by.items():
            out[k] = np.array([P95.pooled(ts.get(t, [])) for t in range(1, max(ts) + 1)])
        return out

    def nll_ratio(self, alpha: float) -> dict[tuple, float]:
        """cell -> mean base NLL of steered rollouts / mean base NLL of the base model's own rollouts."""
        num: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
        base: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for r in self.data["nll"]:
            acc = base[r["model"]] if r["method"] == BASE else num[self._key(r)] if _f(r["alpha"]) == alpha else None
            if acc is not None:
                acc[0] += _f(r["nll_sum"])
                acc[1] += int(r["n_tokens"])
        return {k: (s / n) / (base[k[0]][0] / base[k[0]][1]) for k, (s, n) in num.items() if n and base[k[0]][1]}

    def pmass(self, alpha: float | None) -> dict[tuple, dict[int, list[float]]]:
        """(model, method) -> fork t -> uncensored pmass values; alpha None = the base model (method 'base')."""
        out: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in self.data["pmass"]:
            if r["censored"] == "1":
                continue
            if alpha is None and r["method"] == BASE:
                out[(r["model"], BASE)][int(r["fork_t"])].append(_f(r["pmass"]))
            elif alpha is not None and r["method"] != BASE and _f(r["alpha"]) == alpha:
                out[(r["model"], r["method"])][int(r["fork_t"])].append(_f(r["pmass"]))
        return out

    def mean_pmass(self, model, method, alpha) -> float:
        d = self.pmass(alpha).get((model, method if alpha is not None else BASE), {})
        vals = [v for vs in d.values() for v in vs]
        return float(np.mean(vals)) if vals else float("nan")

    def delta_logit(self, model, method, alpha=1.0) -> tuple[float, float, float, int]:
        """Mean over probes of (target_logit at alpha, averaged over the cells) - the base model's, with a 95%
        bootstrap CI over probes; n probes."""
        base = {r["probe"]: _f(r["target_logit"]) for r in self.data["target"] if r["model"] == model and r["method"] == BASE}
        st = defaultdict(list)
        for r in self.data["target"]:
            if r["model"] == model and r["method"] == method and _f(r["alpha"]) == alpha:
                st[r["probe"]].append(_f(r["target_logit"]))
        d = np.array([np.mean(v) - base[p] for p, v in sorted(st.items()) if p in base])
        if not len(d):
            return (float("nan"),) * 3 + (0,)
        rng = np.random.default_rng(0)
        boots = d[rng.integers(0, len(d), size=(BOOT, len(d)))].mean(1)
        return float(d.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)), len(d)
