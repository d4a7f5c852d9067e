"""Study v2: seeds as units (hierarchical bootstrap), the random-direction control, held-out windows with
intervals, the dose-response grid and the example continuations, at tiny scale."""

import json
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import byte_tokenizer, tiny_model
from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.methods.random_direction import random_directions
from isokl.core.model import prompts
from isokl.core.model.models import from_module
from isokl.core.stats.statistic import P95
from isokl.report.inference import hierarchical
from isokl.study import measures, records
from isokl.study.sweep import SweepConfig, run_sweep

# ---- hierarchical bootstrap --------------------------------------------------------------------------

# Two seeds: a with probes [0, 2], b with the single probe [4]. By hand: stage 1 draws (a, a), (a, b),
# (b, a) or (b, b), each 1/4; a's resampled mean is 0, 1 or 2 with 1/4, 1/2, 1/4; b's is always 4.
#   (a, a): mean of two independent a-means: 0 1/16, 0.5 1/4, 1 3/8, 1.5 1/4, 2 1/16
#   (a, b) and (b, a): (m + 4) / 2: 2 1/4, 2.5 1/2, 3 1/4;   (b, b): 4
EXACT = {
    0.0: Fraction(1, 64),
    0.5: Fraction(4, 64),
    1.0: Fraction(6, 64),
    1.5: Fraction(4, 64),
    2.0: Fraction(1, 64) + Fraction(8, 64),
    2.5: Fraction(16, 64),
    3.0: Fraction(8, 64),
    4.0: Fraction(16, 64),
}


def test_hierarchical_bootstrap_matches_the_hand_computed_distribution(monkeypatch):
    assert sum(EXACT.values()) == 1
    seen: list[np.ndarray] = []
    real = np.quantile
    monkeypatch.setattr(np, "quantile", lambda a, q, **k: seen.append(np.asarray(a)) or real(a, q, **k))
    B = 40_000
    est = hierarchical([np.array([0.0, 2.0]), np.array([4.0])], resamples=B, seed=1)
    assert est.mean == 2.5 and est.n_units == 2 and est.n_values == 3  # mean of the seed means: (1 + 4) / 2
    counts = Counter(np.round(seen[0] * 2) / 2)
    assert set(counts) <= set(EXACT)
    for v, p in EXACT.items():
        p = float(p)
        assert abs(counts[v] / B - p) <= 5 * np.sqrt(p * (1 - p) / B), (v, counts[v] / B, p)  # 5 binomial SE
    # the 95% interval's ends are the 2.5% and 97.5% quantiles of that distribution: 0.5 and 4
    assert (est.lo, est.hi) == (0.5, 4.0)


def test_hierarchical_interval_widens_with_seed_variance():
    rng = np.random.default_rng(0)
    probes = rng.normal(size=16)
    same = hierarchical([probes, probes, probes])
    apart = hierarchical([probes - 3, probes, probes + 3])
    assert apart.mean == pytest.approx(same.mean)
    assert apart.hi - apart.lo > 3 * (same.hi - same.lo)


# ---- random-direction control ------------------------------------------------------------------------


def test_random_direction_is_a_unit_vector_reproducible_from_its_seed(tiny_lm):
    a = extract(tiny_lm, concept.extraction_pairs(0), "random_direction", seed=3)
    b = extract(tiny_lm, concept.extraction_pairs(1), "random_direction", seed=3)  # other pairs: same direction
    c = extract(tiny_lm, concept.extraction_pairs(0), "random_direction", seed=4)
    assert torch.allclose(a.directions.double().norm(dim=-1), torch.ones(len(a.layers), dtype=torch.float64), atol=1e-6)
    assert torch.equal(a.directions, b.directions)
    assert not torch.allclose(a.directions, c.directions)
    assert a.config == {"seed": 3} and a.layers == b.layers
    expected = random_directions(len(a.layers), tiny_lm.d_model, 3)  # numpy's generator: the same on every machine
    assert torch.equal(a.directions.cpu().float(), expected)


# ---- a v2-shaped sweep at tiny scale -----------------------------------------------------------------


def _loader(model_id, device="cpu"):
    return from_module(tiny_model("llama", seed=7), byte_tokenizer(), id=model_id)


V2 = dict(
    models="tiny-a",
    methods="mean_diff",
    control="random_direction",
    control_windows="6",
    seeds="0,1",
    windows="4,6",
    n_heldout="5,3,4",
    alphas="1,2",
    dose_alphas="0.5,3",
    dose_windows="6",
    horizon=8,
)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2")
    run_sweep(SweepConfig(**V2, out=str(out)), loader=_loader)
    return out, records.load(out)


def test_the_control_is_calibrated_like_the_methods(v2):
    _, data = v2
    cal = data["calibration"]
    cells = {(r["method"], r["seed"], r["window"]) for r in cal}
    assert cells == {("mean_diff", s, w) for s in "01" for w in "46"} | {("random_direction", s, "6") for s in "01"}
    assert {r["method"] for r in cal if r["converged"] == "1"} == {"mean_diff", "random_direction"}  # both solved
    hist = data["history"]
    for r in cal:  # the same solver and files: calib_p95 is the statistic history.csv records at c*, not the last step's
        at_c = {h["p95"] for h in hist if (h["method"], h["seed"], h["window"]) == (r["method"], r["seed"], r["window"])
                and float(h["c"]) == float(r["c_star"])}  # fmt: skip
        assert at_c == {r["calib_p95"]}, r


def test_doses_pools_and_windows_follow_the_protocol(v2):
    out, data = v2
    doses = lambda f, w: {float(r["alpha"]) for r in data[f] if r["window"] == w and r["method"] != records.BASE}
    assert doses("trajectory", "6") == doses("target", "6") == doses("nll", "6") == {0.5, 1.0, 2.0, 3.0}
    assert doses("trajectory", "4") == {1.0, 2.0}  # the dose-response only on --dose-windows
    assert doses("pmass", "6") == doses("pmass", "4") == {1.0, 2.0}  # pmass at --alphas only
    prompts_of = lambda f, col: {r[col] for r in data[f]}
    assert len(prompts_of("nll", "prompt")) == 5 and len(prompts_of("pmass", "prompt")) == 3
    assert len(prompts_of("target", "probe")) == 4
    assert (out / "trajectory.csv.gz").exists() and not (out / "trajectory.csv").exists()
    for r in data["calibration"]:
        for w in (20, 50):  # past the horizon (8): not computed
            assert r[f"holdout_p95_t{w}"] == ""
    ex = data["examples"]
    assert {r["prompt"] for r in ex} == {p.id for p in prompts.pool("heldout_generic")[:3]}
    assert {float(r["alpha"]) for r in ex if r["method"] == records.BASE} == {0.0}
    valid = Counter(
        (r["method"], r["seed"], r["window"], float(r["alpha"]), r["prompt"]) for r in data["trajectory"] if r["valid"] == "1"
    )
    for r in ex:  # one piece per scored token, in order, and together the decoded text
        parts = json.loads(r["tokens"])
        assert "".join(parts) == r["text"]
        if r["method"] != records.BASE:
            assert len(parts) == valid[(r["method"], r["seed"], r["window"], float(r["alpha"]), r["prompt"])] > 0


def test_token_pieces_join_to_the_text_through_multibyte_characters():
    tok = byte_tokenizer()
    text = "na\u00efve \U0001f600 ok"  # 2- and 4-byte characters: one byte token each
    ids = tok.encode(text, add_special_tokens=False) + [tok.convert_tokens_to_ids("<eot>")]

    def decode(t):
        return tok.decode(t, skip_special_tokens=True)

    parts = measures.pieces(decode, ids)
    assert len(parts) == len(ids) and "".join(parts) == text == decode(ids)
    assert parts[2:4] == ["", "\u00ef"]  # the first byte of the character adds nothing, the second adds it
    assert parts[7:11] == ["", "", "", "\U0001f600"]  # a 4-byte character: three tokens add nothing
    assert parts[-1] == ""  # end of turn: a token with no text


def test_held_out_windows_and_intervals_come_from_the_same_rollouts(tmp_path):
    out = tmp_path / "w"
    cfg = dict(V2, control="", control_windows="", windows="6", seeds="0", horizon=20, dose_alphas="", dose_windows="")
    run_sweep(SweepConfig(**cfg, out=str(out)), loader=_loader)
    data = records.load(out)
    (cal,) = data["calibration"]
    traj = [r for r in data["trajectory"] if float(r["alpha"]) == 1.0]
    kl = np.full((5, 20), np.nan)
    ids = sorted({r["prompt"] for r in traj})
    for r in traj:
        if r["valid"] == "1":
            kl[ids.index(r["prompt"]), int(r["t"]) - 1] = float(r["kl"])
    p20 = P95.pooled(kl[~np.isnan(kl)])  # all 20 tokens: the t20 window
    assert float(cal["holdout_p95_t20"]) == pytest.approx(p20, rel=1e-6)
    assert float(cal["holdout_p95_t20_lo"]) <= p20 <= float(cal["holdout_p95_t20_hi"])
    first6 = kl[:, :6]
    assert float(cal["holdout_p95"]) == pytest.approx(P95.pooled(first6[~np.isnan(first6)]), rel=1e-6)


def test_prompt_interval_covers_the_population_statistic_at_about_its_level():
    # a population of prompts whose KL scales differ (the source of prompt-to-prompt variance)
    rng = np.random.default_rng(0)
    population = [rng.gamma(2.0, 0.2 * rng.lognormal(0, 0.6), size=50) for _ in range(20_000)]
    truth = P95.pooled(np.concatenate(population))
    hits = 0
    trials = 200
    for _ in range(trials):
        pick = rng.integers(0, len(population), size=48)
        lo, hi = P95.prompt_interval(np.stack([population[i] for i in pick]), level=0.90, resamples=400, seed=1)
        hits += lo <= truth <= hi
    # 90% nominal; percentile bootstraps of a quantile run a little short: 200 trials, accept 0.80-0.97
    assert 0.80 <= hits / trials <= 0.97, hits / trials


def test_the_report_of_a_v2_folder_has_control_rows_figure2_and_examples(v2, tmp_path):
    import shutil

    from isokl.report.build import build

    out, _ = v2
    d = tmp_path / "copy"
    shutil.copytree(out, d, ignore=shutil.ignore_patterns("cells"))  # the CSVs alone
    names = {p.name for p in build(d, expected_cells=6).paths}
    assert {"figure2.png", "figure2.svg", "examples.md", "claims.md", "table1.md"} <= names
    table = (d / "table1.csv").read_text()
    assert "random_direction,control" in table and "mean_diff,method" in table
    claims = (d / "claims.md").read_text()
    assert "plus 2 control cells (random_direction)" in claims and "Random-direction control at 1 nat" in claims
    assert "INCOMPLETE" not in claims  # 4 cells + 2 controls: the 6 expected are all there
    examples = (d / "examples.md").read_text()
    assert examples.count("**alpha 0 (base):**") == 3  # the first 3 prompts, one model
    assert "**mean_diff, alpha 1** (p95 KL" in examples and "**mean_diff, alpha 2** (p95 KL" in examples
    assert (d / "figure2.png").read_bytes().startswith(b"\x89PNG")
    points = (d / "figure1_pmass.csv").read_text().splitlines()
    assert points[0] == "model,method,alpha,fork_t,mean,lo,hi,n" and len(points) > 1
    assert all(int(line.split(",")[-1]) >= 1 for line in points[1:])  # n scored forks behind every point


def test_a_folder_compressed_after_its_run_reads_the_same(v2, tmp_path):
    import gzip
    import shutil

    out, data = v2
    d = tmp_path / "gz"
    shutil.copytree(out, d)
    for p in [*d.glob("*.csv"), *d.glob("cells/*/*.csv")]:  # every plain file, as a finished run may be stored
        p.with_name(p.name + ".gz").write_bytes(gzip.compress(p.read_bytes(), mtime=0))
        p.unlink()
    assert records.load(d) == data
