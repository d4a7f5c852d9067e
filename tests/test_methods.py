"""Methods and hooks: c = 0 is the identity, hooks always detach, planted directions are recovered."""

import pytest
import torch

from isokl.core.extract import extract
from isokl.core.formats import concept
from isokl.core.methods import METHODS, get_method
from isokl.core.model.hooks import steer
from isokl.core.model.models import forward, left_pad, pad_id


def _logits(lm, texts):
    ids, mask, pos = left_pad(lm.encode(texts), pad_id(lm), lm.device)
    with torch.no_grad():
        return forward(lm.model, ids, mask, pos)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


TEXTS = ["Hello there, how are you?", "Tell me about the sea."]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_zero_coefficient_is_bit_identical(tiny_lm, method):
    vec = extract(tiny_lm, concept.extraction_pairs(0), method)
    base = _logits(tiny_lm, TEXTS)
    for c in (0.0, torch.zeros(len(TEXTS))):  # scalar: no hook; per-row zeros: hook adds exact zeros
        with steer(tiny_lm.model, vec, c):
            steered = _logits(tiny_lm, TEXTS)
        assert torch.equal(base, steered)
    with steer(tiny_lm.model, vec, 3.0):  # and a nonzero dose does change the logits
        assert not torch.allclose(base, _logits(tiny_lm, TEXTS))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_context_manager_restores_model(llama_lm, method):
    vec = extract(llama_lm, concept.extraction_pairs(1), method)
    before, state = _logits(llama_lm, TEXTS), _state(llama_lm.model)
    with pytest.raises(RuntimeError, match="boom"), steer(llama_lm.model, vec, 5.0):
        _logits(llama_lm, TEXTS)
        raise RuntimeError("boom")
    with steer(llama_lm.model, vec, 5.0):
        pass
    assert torch.equal(before, _logits(llama_lm, TEXTS))
    assert all(torch.equal(v, state[k]) for k, v in llama_lm.model.state_dict().items())
    assert not any(m._forward_hooks for m in llama_lm.model.modules())


def _planted(n=16, d=24, layers=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    true = torch.nn.functional.normalize(torch.randn(layers, d, generator=g, dtype=torch.float64), dim=-1)
    base = torch.randn(layers, n, d, generator=g, dtype=torch.float64) * 3.0
    noise = torch.randn(layers, n, d, generator=g, dtype=torch.float64) * 0.1
    strength = 2.0 + torch.rand(layers, n, 1, generator=g, dtype=torch.float64)
    return true, base + strength * true[:, None] + noise, base


@pytest.mark.parametrize("method", ["mean_diff", "pca"])
def test_planted_direction_is_recovered(method):
    true, pos, neg = _planted()
    v = get_method(method).fit(pos, neg, {}).directions
    cos = (v * true).sum(-1)
    assert (cos > 0.99).all(), cos  # right direction *and* right sign


def test_pca_uses_uncentred_differences():
    # Every pair differs by the same concept vector plus small noise: centring would erase it.
    true, pos, neg = _planted(seed=3)
    pos = neg + 2.5 * true[:, None] + 0.05 * torch.randn_like(neg)
    v = get_method("pca").fit(pos, neg, {}).directions
    assert ((v * true).sum(-1) > 0.99).all()


def test_ablation_at_one_leaves_zero_projection():
    _, pos, neg = _planted(seed=1)
    v = get_method("directional_ablation").fit(pos, neg, {}).directions[0]
    h = torch.randn(2, 5, v.shape[0], dtype=torch.float64) + 4 * v
    out = get_method("directional_ablation").apply(h, {"direction": v}, torch.ones(2, 1, 1, dtype=torch.float64), {})
    assert (out @ v).abs().max() < 1e-12
    assert (h @ v).abs().min() > 1.0  # it had a real projection before
    reflected = get_method("directional_ablation").apply(h, {"direction": v}, torch.full((2, 1, 1), 2.0, dtype=torch.float64), {})
    assert torch.allclose(reflected @ v, -(h @ v))


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="directional_ablation, mean_diff, pca"):
        get_method("caa")


def test_per_row_coefficients_match_separate_runs(llama_lm):
    vec = extract(llama_lm, concept.extraction_pairs(0), "mean_diff")
    with steer(llama_lm.model, vec, torch.tensor([0.0, 4.0])):
        mixed = _logits(llama_lm, [TEXTS[0], TEXTS[0]])
    with steer(llama_lm.model, vec, 4.0):
        alone = _logits(llama_lm, [TEXTS[0]])
    assert torch.allclose(mixed[0], _logits(llama_lm, [TEXTS[0]])[0], atol=1e-10)
    assert torch.allclose(mixed[1], alone[0], atol=1e-10)


def test_a_method_with_extra_tensors_and_settings_round_trips(llama_lm, tmp_path, monkeypatch):
    from isokl.core.formats.vector import Vector
    from isokl.core.methods import Fit, unit

    class Scaled:  # test-only: h + c * gain_l * v_l, a per-layer tensor beside the direction and one setting
        name, config = "scaled_test", {"power": 1.0}

        def fit(self, pos, neg, config):
            d = (pos - neg).mean(dim=1)
            return Fit(unit(d), {"gain": d.norm(dim=-1, keepdim=True) ** config["power"]})

        def apply(self, h, state, c, config):
            return h + c * state["gain"] * state["direction"]

        def initial_coeff(self, vector):
            return 0.1

    monkeypatch.setitem(METHODS, "scaled_test", Scaled())
    vec = extract(llama_lm, concept.extraction_pairs(0), "scaled_test", power=2.0)
    assert dict(vec.config) == {"power": 2.0} and vec.extra["gain"].shape == (len(vec.layers), 1)
    back = Vector.load(vec.save(tmp_path / "v.safetensors"))
    assert dict(back.config) == {"power": 2.0} and torch.equal(back.extra["gain"], vec.extra["gain"])
    base = _logits(llama_lm, TEXTS)
    with steer(llama_lm.model, vec, 0.5):
        a = _logits(llama_lm, TEXTS)
    with steer(llama_lm.model, back, 0.5):
        b = _logits(llama_lm, TEXTS)
    assert torch.equal(a, b) and not torch.allclose(a, base)
    with pytest.raises(ValueError, match="scaled_test has no setting.*power"):
        extract(llama_lm, concept.extraction_pairs(0), "scaled_test", strength=3)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fixed_vector_says_whether_the_edit_ignores_the_activation(method):
    """`Method.fixed_vector` is what llama.cpp and the export formats ask: True exactly where apply(h) - h is the same
    for every h (a control vector can carry it), False where the edit reads h."""
    m = METHODS[method]
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    state, c = {"direction": v}, torch.full((1, 1, 1), 1.5, dtype=torch.float64)
    h1, h2 = torch.randn(1, 3, 8, dtype=torch.float64), torch.randn(1, 3, 8, dtype=torch.float64)
    same_edit = torch.allclose(m.apply(h1, state, c, m.config) - h1, m.apply(h2, state, c, m.config) - h2, rtol=0, atol=1e-12)
    assert m.fixed_vector is same_edit
