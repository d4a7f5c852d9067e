"""Index: a sweep's checked CSV rows -> `Study`, the rows parsed once into typed records and indexed by cell and dose
(numpy; no torch). The numbers the table, claims and figures show are computed from it by `estimate`.

A "cell" is (model, method, seed, window); alpha = c / c* is the dose multiple (0 = the
base model, method `base`, seed and window None). Controls (`CONTROLS`, e.g. the random
direction) are kept apart from the methods.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from ..study.records import BASE, FILES, HOLDOUT_COLUMNS, STUDY_METHODS, STUDY_MODELS, holdout_columns, typed

CONTROLS = ("random_direction",)  # run beside the methods; Table 1's control rows, not a method

Key = tuple[str, str, int | None, int | None]  # (model, method, seed, window); the base rows: (model, BASE, None, None)
DoseKey = tuple[Key, float]  # (cell, alpha); the base rows at alpha 0


def order(values, preferred):
    seen = list(dict.fromkeys(values))
    return [p for p in preferred if p in seen] + [v for v in seen if v not in preferred]


def key(r: dict) -> Key:
    return (r["model"], r["method"], r["seed"], r["window"])


def dose_key(r: dict) -> DoseKey:
    return (key(r), 0.0 if r["method"] == BASE else r["alpha"])


def base_key(model: str) -> Key:
    return (model, BASE, None, None)


class Study:
    """A study's rows, typed (`records.typed`) and indexed once: the calibration rows (`cal`, one per cell) and, per
    (cell, alpha), the held-out KL [prompt t], NLL and distinct-3 per prompt, target logits per probe and pmass per
    question and fork."""

    def __init__(self, data: dict[str, list[dict]]):
        data = {name: typed(name, rows) for name, rows in data.items() if name in FILES}
        self.cal = data["calibration"]
        every = order([r["method"] for r in self.cal], STUDY_METHODS)
        self.methods = [m for m in every if m not in CONTROLS]
        self.controls = [m for m in every if m in CONTROLS]
        self.models = order([r["model"] for r in self.cal], STUDY_MODELS)
        self.seeds = sorted({r["seed"] for r in self.cal})
        self.windows = sorted({r["window"] for r in self.cal if r["method"] not in CONTROLS})
        self.alphas = sorted({r["alpha"] for r in data["trajectory"]} - {0.0})
        # the concept the rows measured; "" in folders written before concepts (v1, v2: the built-in sentiment)
        self.concept = next((r["concept"] for r in self.cal if r.get("concept")), "")
        self.has_target = bool(data["target"])  # False: the concept has no probes, the target axis was not measured
        self.horizon = max((r["t"] for r in data["trajectory"]), default=0)  # tokens per held-out rollout
        self.kl_prompts: dict[DoseKey, list[str]] = {}
        self.kl_arrays = self._index_kl(data["trajectory"])
        self.nll: dict[DoseKey, dict[str, tuple[float, int]]] = defaultdict(dict)
        self.distinct: dict[DoseKey, dict[str, float]] = defaultdict(dict)  # distinct-3 per rollout (not in v1/v2)
        for r in data["nll"]:
            self.nll[dose_key(r)][r["prompt"]] = (r["nll_sum"], r["n_tokens"])
            if not np.isnan(r.get("distinct3", float("nan"))):
                self.distinct[dose_key(r)][r["prompt"]] = r["distinct3"]
        self.has_distinct = bool(self.distinct)  # False: the folder predates the degeneration measure
        self.target: dict[DoseKey, dict[str, float]] = defaultdict(dict)
        for r in data["target"]:
            self.target[dose_key(r)][r["probe"]] = r["target_logit"]
        self.pmass: dict[DoseKey, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in data["pmass"]:
            self.pmass[dose_key(r)][r["prompt"]][r["fork_t"]] = float("nan") if r["censored"] else r["pmass"]
        self.examples = data.get("examples", [])  # decoded continuations (v2 on); their token pieces since 2026-12-03
        self.history = data.get("history", [])  # every solver step of every cell (the HTML report's calibration view)
        self._fill_windows()

    def _fill_windows(self) -> None:
        """Folders written before the held-out windows were columns (v1): the same values from trajectory, computed
        as the sweep computes them (`records.holdout_columns`)."""
        for r in self.cal:
            if all(not np.isnan(r.get(col, float("nan"))) for col in HOLDOUT_COLUMNS):
                continue  # written by the sweep (v2 on): nothing to fill, and the bootstraps are not cheap
            arr = self.kl(key(r), 1.0)
            if arr is not None:
                for col, v in holdout_columns(arr).items():
                    if np.isnan(r.get(col, float("nan"))):
                        r[col] = v

    def _index_kl(self, rows) -> dict[DoseKey, np.ndarray]:
        """(cell, alpha) -> [prompt t] KL, NaN where the token is not valid (after EOS)."""
        cols: dict[DoseKey, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in rows:
            cols[dose_key(r)][r["prompt"]][r["t"]] = r["kl"] if r["valid"] else float("nan")
        out = {}
        for k, by_prompt in cols.items():
            self.kl_prompts[k] = sorted(by_prompt)
            n_t = max(max(ts) for ts in by_prompt.values())
            arr = np.full((len(by_prompt), n_t), np.nan)
            for i, (_, ts) in enumerate(sorted(by_prompt.items())):
                for t, v in ts.items():
                    arr[i, t - 1] = v
            out[k] = arr
        return out

    def kl(self, k: Key, alpha: float) -> np.ndarray | None:
        """[prompt t] held-out KL of a cell at a dose (NaN: not scored), or None."""
        return self.kl_arrays.get((k, alpha))

    def cells(self, model=None, method=None, seed=None, window=None, controls: bool = False) -> list[dict]:
        """Calibration rows of the cells matching; the control's only when asked (`controls` or its method name)."""
        return [
            r
            for r in self.cal
            if (model is None or r["model"] == model)
            and (method is None or r["method"] == method)
            and (seed is None or r["seed"] == seed)
            and (window is None or r["window"] == window)
            and (controls or method is not None or r["method"] not in CONTROLS)
        ]

    def keys(self, model, method, seed=None, window=None) -> list[Key]:
        return [key(c) for c in self.cells(model, method, seed, window)]

    def grid_cells(self) -> int:
        """Cells of the full grid the data span: models x methods x seeds x windows, plus each control at its
        own windows for every model and seed. A folder with fewer cells than this is an unfinished run."""
        n = len(self.models) * len(self.methods) * len(self.seeds) * len(self.windows)
        for c in self.controls:
            windows = {r["window"] for r in self.cal if r["method"] == c}
            n += len(self.models) * len(self.seeds) * len(windows)
        return n

    def units(self, model, method, window, rows_of: Callable[[list[Key]], np.ndarray]) -> list[np.ndarray]:
        """Seeds are the units of inference: one array per seed, rows_of(the seed's cell keys of (model, method))."""
        return [rows_of(ks) for seed in self.seeds if (ks := self.keys(model, method, seed, window))]
