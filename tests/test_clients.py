"""The real clients from PyPI, not a stand-in: a vector trained by steering-vectors' own `train_steering_vector` or by
repeng's `ControlVector.train` is calibrated in memory by isokl, equals the same vector passed as tensors, and isokl's
steering at c* gives the same logits as the client's own application at multiplier / strength c* (same hook site,
same layer numbering).

Both packages need transformers 4, so they live in the second environment (`scripts/setup_floor.sh`, .venv-floor:
the transformers floor); CI runs this file there with ISOKL_CLIENTS=1, where a missing client fails instead of skipping.
"""

import os

import pytest
import torch

import isokl
from conftest import F32, byte_tokenizer, tiny_model
from isokl.core.model.models import forward, left_pad, pad_id

REQUIRED = os.environ.get("ISOKL_CLIENTS") == "1"
PAIRS = [("I love it, wonderful", "I hate it, awful"), ("What a great day", "What a terrible day"), ("So happy", "So sad")]
PROMPTS = ["Tell me about your weekend.", "Describe a city.", "What should I cook?"]


def client(name: str):
    if REQUIRED:
        return __import__(name)
    return pytest.importorskip(name, reason=f"{name} needs transformers 4: it runs in .venv-floor (scripts/setup_floor.sh)")


def logits(model, tok, ctx):
    lm = isokl.LM.wrap(model, tok)
    ids, mask, pos = left_pad(lm.encode(["Hello there, how are you?"]), pad_id(lm), lm.device)
    with ctx, torch.no_grad():
        return forward(model, ids, mask, pos)


def test_a_steering_vectors_vector_is_calibrated_in_memory_and_steers_as_its_client_does():
    sv = client("steering_vectors")
    model, tok = tiny_model("llama", dtype=torch.float32, seed=1), byte_tokenizer()
    trained = sv.train_steering_vector(model, tok, PAIRS, layers=[1, 2])
    assert set(trained.layer_activations) == {1, 2}
    res = isokl.calibrate_iso_kl((model, tok), trained, PROMPTS, T=6, progress=False)
    as_tensors = isokl.calibrate_iso_kl((model, tok), dict(trained.layer_activations), PROMPTS, T=6, progress=False)
    assert res.vector.layers == (1, 2) and torch.equal(res.vector.directions, as_tensors.vector.directions)
    assert res.c_star == as_tensors.c_star and res.status == as_tensors.status
    ours = logits(model, tok, isokl.steer(model, res))
    theirs = logits(model, tok, trained.apply(model, multiplier=res.c_star))
    base = logits(model, tok, torch.no_grad())
    assert not torch.allclose(ours, base, **F32)  # the dose moves the model
    assert torch.allclose(ours, theirs, **F32)  # float32 both ways: equal to float32 rounding of c* x v


def test_a_repeng_control_vector_is_calibrated_in_memory_and_steers_as_its_client_does():
    repeng = client("repeng")
    model, tok = tiny_model("llama", dtype=torch.float32, seed=2), byte_tokenizer()
    entries = [repeng.DatasetEntry(positive=p, negative=n) for p, n in PAIRS * 2]
    cv = repeng.ControlVector.train(model, tok, entries)  # default: every block but the first (keys are block indices)
    res = isokl.calibrate_iso_kl((model, tok), cv, PROMPTS, T=6, progress=False)
    assert res.vector.layers == tuple(sorted(cv.directions)) == (1, 2, 3)
    # a key counted from the end (as repeng's layer_ids may be) names the same block
    from_end = repeng.ControlVector(cv.model_type, {k - 4: d for k, d in cv.directions.items()})
    assert torch.equal(isokl.Vector.from_tensors((model, tok), from_end).directions, res.vector.directions)
    ours = logits(model, tok, isokl.steer(model, res))
    wrapped = repeng.ControlModel(model, list(cv.directions))
    try:
        wrapped.set_control(cv, res.c_star)
        theirs = logits(model, tok, torch.no_grad())
    finally:
        wrapped.unwrap()
    assert torch.allclose(ours, theirs, **F32)
