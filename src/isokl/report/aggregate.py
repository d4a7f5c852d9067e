"""Aggregate: a sweep's checked CSV rows -> `Study`, every per-cell, per-seed and per-(model, method) number that
Table 1, the claims and the figures use (numpy; no torch).

A "cell" is (model, method, seed, window); alpha = c / c* is the dose multiple (0 = the
base model, method `base`). Per-token p95 at t = the statistic (`statistic.P95`) across
held-out prompts of the KL at token t; pooled p95 over the first t tokens = the statistic
the 1-nat target refers to. Seeds are the units of inference (docs/decisions.md, Study
v2): `est_*` return an `inference.Estimate` (mean over seeds, two-stage bootstrap
interval); a seed's value for a probe is the mean over that seed's cells. Controls
(`CONTROLS`, e.g. the random direction) are kept apart from the methods.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..core.statistic import P95
from ..study.records import BASE, HOLDOUT_COLUMNS, STUDY_METHODS, STUDY_MODELS, holdout_columns
from .inference import Estimate, hierarchical

CONTROLS = ("random_direction",)
REPETITIVE = 0.5  # a rollout with distinct-3 below this is a loop (docs/decisions.md, "A degeneration measure")  # run beside the methods; Table 1's control rows, not a method


def _f(x) -> float:
    return float(x) if x not in ("", None) else float("nan")


def order(values, preferred):
    seen = list(dict.fromkeys(values))
    return [p for p in preferred if p in seen] + [v for v in seen if v not in preferred]


Key = tuple[str, str, str, str]  # (model, method, seed, window) as written


class Study:
    """Indexes the CSV rows by cell and dose once; computes every aggregate the table, figures and claims use."""

    def __init__(self, data: dict[str, list[dict]]):
        self.data = data
        self.cal = [dict(r) for r in data["calibration"]]
        every = order([r["method"] for r in self.cal], STUDY_METHODS)
        self.methods = [m for m in every if m not in CONTROLS]
        self.controls = [m for m in every if m in CONTROLS]
        self.models = order([r["model"] for r in self.cal], STUDY_MODELS)
        self.seeds = sorted({int(r["seed"]) for r in self.cal})
        self.windows = sorted({int(r["window"]) for r in self.cal if r["method"] not in CONTROLS})
        self.alphas = sorted({_f(r["alpha"]) for r in data["trajectory"]} - {0.0})
        # the concept the rows measured; "" in folders written before concepts (v1, v2: the built-in sentiment)
        self.concept = next((r["concept"] for r in self.cal if r.get("concept")), "")
        self.has_target = bool(data["target"])  # False: the concept has no probes, the target axis was not measured
        self.horizon = max((int(r["t"]) for r in data["trajectory"]), default=0)  # tokens per held-out rollout
        self._kl = self._index_kl(data["trajectory"])
        self._nll: dict[tuple, dict[str, tuple[float, int]]] = defaultdict(dict)
        self._distinct: dict[tuple, dict[str, float]] = defaultdict(dict)  # distinct-3 per rollout (not in v1/v2)
        for r in data["nll"]:
            self._nll[self._dose_key(r)][r["prompt"]] = (_f(r["nll_sum"]), int(r["n_tokens"]))
            if r.get("distinct3", "") != "":
                self._distinct[self._dose_key(r)][r["prompt"]] = _f(r["distinct3"])
        self.has_distinct = bool(self._distinct)  # False: the folder predates the degeneration measure
        self._target: dict[tuple, dict[str, float]] = defaultdict(dict)
        for r in data["target"]:
            self._target[self._dose_key(r)][r["probe"]] = _f(r["target_logit"])
        self._fill_windows()
        self._pmass: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in data["pmass"]:
            self._pmass[self._dose_key(r)][r["prompt"]][int(r["fork_t"])] = (
                float("nan") if r["censored"] == "1" else _f(r["pmass"])
            )

    def _fill_windows(self) -> None:
        """Folders written before the held-out windows were columns (v1): the same values from trajectory, computed
        as the sweep computes them (`records.holdout_columns`)."""
        for r in self.cal:
            if all(r.get(col, "") != "" for col in HOLDOUT_COLUMNS):
                continue  # written by the sweep (v2 on): nothing to fill, and the bootstraps are not cheap
            arr = self.kl(self._key(r), 1.0)
            if arr is not None:
                for col, v in holdout_columns(arr).items():
                    if r.get(col, "") == "":
                        r[col] = repr(v)

    # ---- indexing --------------------------------------------------------------------------------------

    @staticmethod
    def _key(r) -> Key:
        return (r["model"], r["method"], r["seed"], r["window"])

    @classmethod
    def _dose_key(cls, r) -> tuple:
        """(cell, alpha); the base model's rows: ((model, BASE, '', ''), 0.0)."""
        return (cls._key(r), 0.0 if r["method"] == BASE else _f(r["alpha"]))

    @staticmethod
    def base_key(model: str) -> Key:
        return (model, BASE, "", "")

    def _index_kl(self, rows) -> dict[tuple, np.ndarray]:
        """(cell, alpha) -> [prompt t] KL, NaN where the token is not valid (after EOS)."""
        cols: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in rows:
            cols[self._dose_key(r)][r["prompt"]][int(r["t"])] = _f(r["kl"]) if r["valid"] == "1" else float("nan")
        out = {}
        self._kl_prompts = {k: sorted(v) for k, v in cols.items()}
        for k, by_prompt in cols.items():
            n_t = max(max(ts) for ts in by_prompt.values())
            arr = np.full((len(by_prompt), n_t), np.nan)
            for i, (_, ts) in enumerate(sorted(by_prompt.items())):
                for t, v in ts.items():
                    arr[i, t - 1] = v
            out[k] = arr
        return out

    def cells(self, model=None, method=None, seed=None, window=None, controls: bool = False) -> list[dict]:
        """Calibration rows of the cells matching; the control's only when asked (`controls` or its method name)."""
        return [
            r
            for r in self.cal
            if (model is None or r["model"] == model)
            and (method is None or r["method"] == method)
            and (seed is None or int(r["seed"]) == seed)
            and (window is None or int(r["window"]) == window)
            and (controls or method is not None or r["method"] not in CONTROLS)
        ]

    def grid_cells(self) -> int:
        """Cells of the full grid the data span: models x methods x seeds x windows, plus each control at its
        own windows for every model and seed. A folder with fewer cells than this is an unfinished run."""
        n = len(self.models) * len(self.methods) * len(self.seeds) * len(self.windows)
        for c in self.controls:
            windows = {int(r["window"]) for r in self.cal if r["method"] == c}
            n += len(self.models) * len(self.seeds) * len(windows)
        return n

    def keys(self, model, method, seed=None, window=None) -> list[Key]:
        return [self._key(c) for c in self.cells(model, method, seed, window)]

    # ---- KL ---------------------------------------------------------------------------------------------

    def kl(self, key: Key, alpha: float) -> np.ndarray | None:
        """[prompt t] held-out KL of a cell at a dose (NaN: not scored), or None."""
        return self._kl.get((key, alpha))

    def prompt_p95(self, key: Key, alpha: float, prompt: str) -> float:
        """One prompt's p95 KL over its valid tokens."""
        arr = self.kl(key, alpha)
        ids = self._kl_prompts.get((key, alpha), [])
        if arr is None or prompt not in ids:
            return float("nan")
        row = arr[ids.index(prompt)]
        return P95.pooled(row[~np.isnan(row)])

    def per_t_p95(self, alpha: float) -> dict[Key, np.ndarray]:
        """cell -> [t] p95 over prompts of per-token KL at dose `alpha` (methods' cells and controls')."""
        out = {}
        for (key, a), arr in self._kl.items():
            if a == alpha:
                out[key] = np.array(P95.per_position(np.nan_to_num(arr), ~np.isnan(arr)))
        return out

    def pooled_p95(self, key: Key, alpha: float, T: int | None = None) -> float:
        arr = self.kl(key, alpha)
        if arr is None:
            return float("nan")
        arr = arr[:, :T]
        return P95.pooled(arr[~np.isnan(arr)])

    def cumulative_p95(self, key: Key, alpha: float) -> np.ndarray:
        """[t] the pooled statistic over the first t tokens: what the 1-nat target refers to at t = T."""
        arr = self.kl(key, alpha)
        if arr is None:
            return np.array([])
        return np.array([self.pooled_p95(key, alpha, t) for t in range(1, arr.shape[1] + 1)])

    def est_mean_kl(self, model, method, alpha, window=None) -> Estimate:
        """Mean KL per token (pooled over prompts and tokens), seeds as units."""

        def rows(keys):
            arrs = [a for k in keys if (a := self.kl(k, alpha)) is not None]
            if not arrs:
                return np.zeros((0, 2))
            return np.mean([np.stack([np.nansum(a, 1), (~np.isnan(a)).sum(1)], 1) for a in arrs], 0)

        return hierarchical(self._units(model, method, window, rows), stat=lambda s: s[..., 0] / s[..., 1])

    def seed_range(self, model, method, window, value) -> tuple[float, float, float]:
        """(mean, min, max) over seeds of value(the seed's cell keys) (e.g. a pooled p95; its mean over cells)."""
        vals = [value(ks) for seed in self.seeds if (ks := self.keys(model, method, seed, window))]
        vals = [v for v in vals if not np.isnan(v)]
        return (float(np.mean(vals)), float(min(vals)), float(max(vals))) if vals else (float("nan"),) * 3

    # ---- NLL ---------------------------------------------------------------------------------------------

    def _nll_rows(self, keys: list[Key], alpha: float) -> np.ndarray:
        """[prompt 4]: steered NLL sum and tokens (mean over the cells), the base model's own sum and tokens."""
        base = self._nll.get((self.base_key(keys[0][0]), 0.0), {}) if keys else {}
        per = [self._nll.get((k, alpha), {}) for k in keys]
        prompts = sorted(set(base).intersection(*map(set, per))) if per else []
        return np.array([[np.mean([d[p][0] for d in per]), np.mean([d[p][1] for d in per]), *base[p]] for p in prompts]).reshape(
            -1, 4
        )

    def nll_ratio(self, alpha: float) -> dict[Key, float]:
        """cell -> mean base NLL per token of its steered rollouts / the same for the base model's own rollouts."""
        out = {}
        for key, a in self._nll:
            if a == alpha and key[1] != BASE:
                rows = self._nll_rows([key], alpha)
                if len(rows) and rows[:, 1].sum() and rows[:, 3].sum():
                    out[key] = float(_ratio(rows.sum(0)))
        return out

    def est_nll_ratio(self, model, method, alpha, window=None) -> Estimate:
        return hierarchical(self._units(model, method, window, lambda ks: self._nll_rows(ks, alpha)), stat=_ratio)

    def est_excess_nll(self, model, method, alpha, window=None) -> Estimate:
        """Steered minus base NLL per token (nats), same prompts."""
        return hierarchical(self._units(model, method, window, lambda ks: self._nll_rows(ks, alpha)), stat=_excess)

    # ---- degeneration (distinct-3 of the held-out rollouts) ----------------------------------------------------

    def est_repetitive(self, model, method, alpha, window=None) -> Estimate:
        """Share of held-out rollouts whose distinct-3 is below REPETITIVE (a loop), seeds as units; method BASE: the
        base model's own rollouts (one unit). A prompt's value in a seed is its mean over that seed's cells."""

        def rows(keys):
            per = [self._distinct.get((k, 0.0 if method == BASE else alpha), {}) for k in keys]
            prompts = sorted(set().union(*map(set, per))) if per else []
            return np.array([np.mean([d[p] < REPETITIVE for d in per if p in d]) for p in prompts])

        units = [rows([self.base_key(model)])] if method == BASE else self._units(model, method, window, rows)
        return hierarchical(units)

    # ---- target-axis logit ----------------------------------------------------------------------------------

    def _delta_rows(self, keys: list[Key], alpha: float) -> np.ndarray:
        """[probe]: L(alpha) - L(base) per probe, the mean over the cells."""
        if not keys:
            return np.array([])
        base = self._target.get((self.base_key(keys[0][0]), 0.0), {})
        per = [self._target.get((k, alpha), {}) for k in keys]
        probes = sorted(set(base).intersection(*map(set, per)))
        return np.array([np.mean([d[p] for d in per]) - base[p] for p in probes])

    def est_delta_logit(self, model, method, alpha=1.0, window=None) -> Estimate:
        return hierarchical(self._units(model, method, window, lambda ks: self._delta_rows(ks, alpha)))

    def cell_delta_logit(self, key: Key, alpha=1.0) -> Estimate:
        """One cell: mean over probes, probe-bootstrap 95% interval."""
        return hierarchical([self._delta_rows([key], alpha)])

    def est_delta_vs_control(self, model, method, control, alpha=1.0) -> Estimate:
        """The method's delta logit minus the control's, paired by seed and probe, in the control's windows."""
        units = []
        for seed in self.seeds:
            ctrl = self.keys(model, control, seed)
            mine = [k for k in self.keys(model, method, seed) if k[3] in {c[3] for c in ctrl}]
            if ctrl and mine:
                a, b = self._delta_rows(mine, alpha), self._delta_rows(ctrl, alpha)
                if len(a) == len(b):
                    units.append(a - b)
        return hierarchical(units)

    # ---- branch_pmass ------------------------------------------------------------------------------------------

    def _pmass_rows(self, keys: list[Key], alpha: float) -> np.ndarray:
        """[question 4]: sum and count of the uncensored pmass values over the cells and forks; the base's."""
        if not keys:
            return np.zeros((0, 4))
        base = self._pmass.get((self.base_key(keys[0][0]), 0.0), {})
        per = [self._pmass.get((k, alpha), {}) for k in keys]
        rows = []
        for q in sorted(set(base).intersection(*map(set, per))):
            vals = np.array([v for d in per for v in d[q].values()])
            bv = np.array(list(base[q].values()))
            rows.append([np.nansum(vals), np.sum(~np.isnan(vals)), np.nansum(bv), np.sum(~np.isnan(bv))])
        return np.array(rows).reshape(-1, 4)

    def _paired_rows(self, keys: list[Key], alpha: float) -> np.ndarray:
        """[question 2]: sum and count of pmass(t) - pmass(0), same question, cell and dose, uncensored t >= 5."""
        per = [self._pmass.get((k, alpha), {}) for k in keys]
        rows = []
        for q in sorted(set().union(*map(set, per))) if per else []:
            diffs = [v - d[q][0] for d in per if q in d and 0 in d[q] for t, v in d[q].items() if t >= 5 and not np.isnan(v)]
            rows.append([float(np.sum(diffs)), len(diffs)])
        return np.array(rows).reshape(-1, 2)

    def est_pmass_change(self, model, method, alpha, window=None) -> Estimate:
        return hierarchical(self._units(model, method, window, lambda ks: self._pmass_rows(ks, alpha)), stat=_excess)

    def est_pmass_paired(self, model, method, alpha, window=None) -> Estimate:
        return hierarchical(
            self._units(model, method, window, lambda ks: self._paired_rows(ks, alpha)), stat=lambda s: s[..., 0] / s[..., 1]
        )

    def pmass_change(self, key: Key, alpha: float) -> float:
        """One cell: mean uncensored pmass at the dose minus the base model's (v1's definition)."""
        rows = self._pmass_rows([key], alpha)
        return float(_excess(rows.sum(0))) if len(rows) else float("nan")

    def pmass_curve(self, model, method, alpha) -> dict[int, list[float]]:
        """fork t -> uncensored pmass values over the (model, method) cells (method BASE: the base model's)."""
        keys = [self.base_key(model)] if method == BASE else self.keys(model, method)
        out: dict[int, list[float]] = defaultdict(list)
        for k in keys:
            for forks in self._pmass.get((k, 0.0 if method == BASE else alpha), {}).values():
                for t, v in forks.items():
                    if not np.isnan(v):
                        out[t].append(v)
        return dict(out)

    def base_pmass(self, model) -> float:
        """The base model's mean pmass over its scored forks."""
        vals = [v for vs in self.pmass_curve(model, BASE, 0.0).values() for v in vs]
        return float(np.mean(vals)) if vals else float("nan")

    def est_pmass_at(self, model, method, alpha, t: int) -> tuple[Estimate, int]:
        """Mean uncensored pmass at fork t with its two-stage bootstrap interval (seeds, then questions), as Table 1's
        intervals, and the number of scored forks behind it; method BASE: the base model's questions (one unit)."""
        a = 0.0 if method == BASE else alpha

        def rows(keys):
            per = [self._pmass.get((k, a), {}) for k in keys]
            out = []
            for q in sorted(set().union(*map(set, per))):
                vals = [d[q][t] for d in per if q in d and t in d[q] and not np.isnan(d[q][t])]
                if vals:
                    out.append([sum(vals), len(vals)])
            return np.array(out).reshape(-1, 2)

        units = [rows([self.base_key(model)])] if method == BASE else self._units(model, method, None, rows)
        n = int(sum(u[:, 1].sum() for u in units))
        return hierarchical(units, stat=lambda s: s[..., 0] / s[..., 1]), n

    def pmass_counts(self, model, method, alpha) -> int:
        return sum(len(v) for v in self.pmass_curve(model, method, alpha).values())

    # ---- units ----------------------------------------------------------------------------------------------

    def _units(self, model, method, window, rows_of) -> list[np.ndarray]:
        """One array per seed: rows_of(the seed's cell keys)."""
        return [rows_of(ks) for seed in self.seeds if (ks := self.keys(model, method, seed, window))]


def _ratio(s: np.ndarray) -> np.ndarray:
    """Column sums [steered sum, steered n, base sum, base n] -> (steered per token) / (base per token)."""
    return (s[..., 0] / s[..., 1]) / (s[..., 2] / s[..., 3])


def _excess(s: np.ndarray) -> np.ndarray:
    """Column sums [steered sum, steered n, base sum, base n] -> steered per item minus base per item."""
    return s[..., 0] / s[..., 1] - s[..., 2] / s[..., 3]
