"""The notebook face: a loaded (model, tokenizer), plain strings, tuples and tensors in every verb; the result is the
same as through an LM; bad input is one line before anything runs; a bf16 model stays bf16; steer doses at alpha x c*;
results show short reprs and self-contained HTML."""

import re
from pathlib import Path

import pytest
import torch

import isokl
from conftest import byte_tokenizer, tiny_model
from isokl.core import show
from isokl.core.formats import concept
from isokl.core.formats.tensors import VectorFileError
from isokl.core.model.hooks import blocks, capture
from isokl.core.model.hooks import steer as core_steer
from isokl.core.model.inputs import as_pairs, as_prompts
from isokl.core.model.models import forward, from_module, left_pad, pad_id
from isokl.core.model.prompts import Pair, Prompt

PAIRS = [("I love it, wonderful", "I hate it, awful"), ("What a great day", "What a terrible day"), ("So happy", "So sad")]
PROMPTS = ["Tell me about your weekend.", "Describe a city.", "What should I cook?"]


def loaded(dtype=torch.float64, seed=0):
    """What a user holds: a transformers model and its tokenizer (a tiny random Llama, built offline)."""
    return tiny_model("llama", dtype=dtype, seed=seed), byte_tokenizer()


class DatasetEntry:  # repeng's training pair, duck-typed
    def __init__(self, positive, negative):
        self.positive, self.negative = positive, negative


def test_strings_messages_and_tuples_become_the_librarys_types():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Well,"},
    ]
    got = as_prompts(["Hello", msgs, Prompt("x")])
    assert got == [Prompt("Hello"), Prompt("Hi", system="Be brief.", assistant_prefix="Well,"), Prompt("x")]
    assert as_prompts("one prompt") == [Prompt("one prompt")] and as_prompts(msgs) == [got[1]]
    pairs = as_pairs([("a", "b"), DatasetEntry("c", "d"), (msgs, [{"role": "user", "content": "Hi"}])])
    assert pairs[0] == Pair(Prompt("", text="a"), Prompt("", text="b"))  # a string side is a full text, used as is
    assert pairs[1].negative.text == "d" and pairs[2].positive == got[1]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, t: isokl.extract(m, PAIRS, "mean_diff"), "without its tokenizer: pass \\(model, tokenizer\\)"),
        (lambda m, t: isokl.extract((m, t), [("only one side",)], "mean_diff"), r"pairs\[0\]: got tuple"),
        (lambda m, t: isokl.extract((m, t), "not pairs", "mean_diff"), "pairs: got str"),
        (lambda m, t: isokl.extract((m, t), [("a", "")], "mean_diff"), "negative: an empty string"),
        (lambda m, t: isokl.calibrate_iso_kl((m, t), torch.ones(32), PROMPTS), "needs its layers"),
        (lambda m, t: isokl.check((m, t), {1: torch.ones(32)}, PROMPTS), "not calibrated"),
        (lambda m, t: isokl.check((m, t), {1: torch.ones(32)}, [3, 4]), r"prompts\[0\]: got int 3"),
        (lambda m, t: isokl.calibrate((m, t), {1: torch.ones(32)}, [{"role": "robot", "content": "x"}]), "role in"),
        (lambda m, t: isokl.extract("smollm2-135m", PAIRS, "mean_diff"), "load the model first"),
    ],
)
def test_bad_input_is_one_line_naming_what_came_before_the_model_runs(call, message):
    model, tok = loaded()
    runs = []
    hd = model.register_forward_hook(lambda *a: runs.append(1))
    with pytest.raises(ValueError, match=message) as e:
        call(model, tok)
    hd.remove()
    assert "\n" not in str(e.value)
    if "not calibrated" not in message:
        assert runs == []  # refused before any forward


def test_a_loaded_model_and_strings_give_the_same_c_star_as_the_lm_path():
    model, tok = loaded()
    vec = isokl.extract((model, tok), PAIRS, "mean_diff", layers=(1, 2))
    res = isokl.calibrate_iso_kl((model, tok), vec, PROMPTS, T=6, progress=False)
    lm = from_module(model, tok, id=vec.model_id)
    pairs = [Pair(Prompt("", text=a), Prompt("", text=b)) for a, b in PAIRS]
    ref_vec = isokl.extract(lm, pairs, "mean_diff", layers=(1, 2))
    ref = isokl.calibrate_iso_kl(lm, ref_vec, [Prompt(p) for p in PROMPTS], T=6, progress=False)
    assert torch.equal(vec.directions, ref_vec.directions)
    assert res.c_star == ref.c_star and res.p95 == ref.p95 and res.status == ref.status


def test_a_bf16_model_stays_bf16_in_place_and_steers_within_bf16_rounding():
    """Nothing is copied or cast; the edit at the hook is h + c v to bf16 rounding: four roundings (c, v, c v, the sum),
    each within bf16's unit roundoff u = 2^-8 of its operand (8 significant bits), so elementwise
    |edit - exact| <= u (|c v| ((1 + u)^3 - 1) / u + |h + c v|) <= u (3.02 |c v| + |h + c v|)."""
    model, tok = loaded(torch.bfloat16)
    ptrs = [p.data_ptr() for p in model.parameters()]
    res = isokl.calibrate_iso_kl(
        (model, tok), isokl.extract((model, tok), PAIRS, "mean_diff", layers=(1, 2)), PROMPTS, T=6, progress=False
    )
    assert [p.data_ptr() for p in model.parameters()] == ptrs and next(model.parameters()).dtype == torch.bfloat16
    assert res.vector.calibration.dtype == "bfloat16" and res.c_star > 0
    lm = isokl.LM.wrap(model, tok)
    ids, mask, pos = left_pad(lm.encode([lm.format(Prompt(p)) for p in PROMPTS]), pad_id(lm), lm.device)
    v, c = res.vector, res.c_star
    with torch.no_grad():
        with capture(model, (0, 1)) as base:
            forward(model, ids, mask, pos)
        with isokl.steer(model, v), capture(model, (1,)) as steered:
            forward(model, ids, mask, pos)
        # layer 1's input is layer 0's output (unsteered): recompute block 1 exactly, then add c v in float64
        with capture(model, (1,)) as plain:
            forward(model, ids, mask, pos)
    h, cv = plain[1].double(), c * v.directions[v.layers.index(1)].double()
    err = (steered[1].double() - (h + cv)).abs()
    bound = 2.0**-8 * (3.02 * cv.abs() + (h + cv).abs())
    assert bool((err <= bound).all()), float((err - bound).max())
    assert torch.equal(base[1], plain[1])  # the hook left the model as it was


def test_c_zero_is_the_base_model_in_bf16():
    model, tok = loaded(torch.bfloat16)
    vec = isokl.Vector.from_tensors((model, tok), {1: torch.ones(32)})
    lm = isokl.LM.wrap(model, tok)
    ids, mask, pos = left_pad(lm.encode(["Hello there"]), pad_id(lm), lm.device)
    with torch.no_grad():
        a = forward(model, ids, mask, pos)
        with isokl.steer(model, vec, c=0.0):
            b = forward(model, ids, mask, pos)
    assert torch.equal(a, b)


class SteeringVector:  # steering-vectors' value, duck-typed
    def __init__(self, layer_activations, layer_type="decoder_block"):
        self.layer_activations, self.layer_type = layer_activations, layer_type


class ControlVector:  # repeng's value, duck-typed: numpy arrays keyed by layer, negative from the end
    def __init__(self, directions):
        self.model_type, self.directions = "llama", directions


def test_vectors_from_memory_in_every_form_are_the_same_vector():
    model, tok = loaded()
    d = torch.randn(2, 32, dtype=torch.float64)
    forms = [
        {2: d[0], 3: d[1]},
        SteeringVector({2: d[0], 3: d[1]}),
        ControlVector({-2: d[0].numpy(), -1: d[1].numpy()}),  # 4 blocks: -2 is block 2
    ]
    vecs = [isokl.Vector.from_tensors((model, tok), f) for f in forms]
    vecs.append(isokl.Vector.from_tensors((model, tok), d, layers=[2, 3]))
    for v in vecs:
        assert v.layers == (2, 3) and v.method == "additive" and v.model_id == vecs[0].model_id
        assert torch.equal(v.directions, d.float()) and v.resid_norm == vecs[0].resid_norm > 0
    same = isokl.Vector.from_tensors((model, tok), d[0], layers=[1, 2])
    assert torch.equal(same.directions[0], same.directions[1])


@pytest.mark.parametrize(
    "tensors, layers, message",
    [
        ({1: torch.ones(33)}, None, "width 33; .* has width 32"),
        ({1: torch.tensor([float("nan")] * 32)}, None, "layer 1: NaN"),
        ({7: torch.ones(32)}, None, "layer 7: the model has blocks 0..3"),
        ({1: torch.zeros(32)}, None, "layer 1: norm 0 is outside"),
        ({1: torch.ones(32, dtype=torch.long)}, None, "not a floating-point"),
        (torch.ones(3, 32), [1, 2], "shape \\(3, 32\\) for 2 layers"),
        (SteeringVector({1: torch.ones(32)}, "mlp"), None, "layer_type 'mlp'"),
        ({1: torch.ones(32)}, [1], "layers= goes with one tensor"),
        ("not a vector", None, "no such file"),
    ],
)
def test_a_bad_vector_fails_in_one_line_before_any_forward(tensors, layers, message):
    model, tok = loaded()
    runs = []
    hd = model.register_forward_hook(lambda *a: runs.append(1))
    with pytest.raises(VectorFileError, match=message) as e:
        if isinstance(tensors, str):
            isokl.calibrate((model, tok), tensors, PROMPTS, progress=False)
        else:
            isokl.Vector.from_tensors((model, tok), tensors, layers)
    hd.remove()
    assert runs == [] and "\n" not in str(e.value)


def test_steer_doses_at_alpha_times_c_star_or_at_an_explicit_c():
    model, tok = loaded()
    lm = isokl.LM.wrap(model, tok)
    res = isokl.calibrate_iso_kl(lm, {1: torch.randn(32), 2: torch.randn(32)}, PROMPTS, T=6, progress=False)
    v = res.vector
    ids, mask, pos = left_pad(lm.encode(["Hello"]), pad_id(lm), lm.device)

    def logits(ctx):
        with ctx, torch.no_grad():
            return forward(model, ids, mask, pos)

    assert torch.equal(logits(isokl.steer(model, v)), logits(core_steer(model, v, res.c_star)))
    assert torch.equal(logits(isokl.steer(lm, res, alpha=2)), logits(core_steer(model, v, 2 * res.c_star)))
    assert torch.equal(logits(isokl.steer((model, tok), v, c=0.5)), logits(core_steer(model, v, 0.5)))
    with pytest.raises(TypeError):
        isokl.steer(model, v, 2.0)  # a bare number is not silently read as alpha or c
    with pytest.raises(ValueError, match="not both"), isokl.steer(model, v, alpha=2, c=1.0):
        pass
    raw = isokl.Vector.from_tensors(lm, {1: torch.ones(32)})
    with pytest.raises(ValueError, match="not calibrated, so alpha has no c\\*"), isokl.steer(model, raw):
        pass
    assert not any(b._forward_hooks for b in blocks(model))


def test_a_grid_with_controls_and_its_judge_from_python(tmp_path):
    model, tok = loaded(torch.float32, seed=3)
    lm = isokl.LM.wrap(model, tok, id="tiny")
    c = concept.Concept.load("sentiment")
    vecs = [isokl.extract(lm, c.pairs(0), m, layers=(1, 2)) for m in ("mean_diff", "pca")]
    grid = isokl.calibrate(lm, vecs, c.calibration(0, 4), T=6, controls=True, progress=False)
    assert len(grid) == 2 and list(grid.controls) == [(1, 2)] and grid["pca@1-2"] is grid[1]
    assert grid.controls[(1, 2)].vector.method == "random_direction"
    board = isokl.judge(lm, grid, c, T=8, progress=False, out=tmp_path)
    assert set(board.ranked()) == {"mean_diff@1-2", "pca@1-2"} and (tmp_path / "judge" / "settings.json").is_file()
    html_ = board._repr_html_()
    assert "mean_diff 1..2" in html_ and "random_direction 1..2" in html_ and "ctrl" in html_


def test_results_show_short_reprs_and_self_contained_html(capsys):
    model, tok = loaded()
    lm = isokl.LM.wrap(model, tok)
    res = isokl.calibrate_iso_kl(lm, isokl.extract(lm, PAIRS, "pca", layers=(1, 2)), PROMPTS, T=6, progress=False)
    gen = isokl.generate(lm, res, "Hello", alphas=(1.0,), T=6)
    chk = isokl.check(lm, res, PROMPTS)
    for value in (res, res.vector, gen, chk):
        r = repr(value)
        assert len(r) < 300 and "tensor(" not in r, r
    for value in (res, gen, chk):
        page = value._repr_html_()
        assert "<script" not in page and not re.search(r"(src|href)=|url\(|https?:", page)
    assert f"{res.c_star:.6g}" in res._repr_html_() and chk.verdict in chk._repr_html_()
    steered = gen.steered[0][0]
    titles = [float(x) for x in re.findall(r'title="KL ([0-9.]+) nats"', gen._repr_html_())]
    assert titles == pytest.approx([round(x, 3) for x in steered.kl], abs=5e-4)
    assert "".join(steered.pieces).strip() == steered.text


def test_progress_true_shows_a_bar_and_progress_false_is_silent(capsys):
    model, tok = loaded()
    v = {1: torch.randn(32)}
    isokl.calibrate((model, tok), v, PROMPTS, T=4, progress=False)
    assert capsys.readouterr().err == ""
    isokl.calibrate((model, tok), v, PROMPTS, T=4, progress=True)
    assert "calibrating 1 vector" in capsys.readouterr().err


def test_the_notebook_colours_are_report_htmls_colours():
    js = (Path(isokl.__file__).parent / "report" / "assets" / "page.js").read_text()
    stops = re.search(r"const STOPS = (\[.*?\]\]);", js).group(1)
    parsed = tuple(
        (float(a), tuple(int(x) for x in rgb.split(","))) for a, rgb in re.findall(r"\[([0-9.]+), \[([0-9, ]+)\]\]", stops)
    )
    assert parsed == show.STOPS
    from isokl.report.page import KL_SCALE

    assert show.KL_SCALE == KL_SCALE
    assert show.colour(0) == "rgb(255,255,255)" and show.colour(5) == "rgb(179,0,0)"


def test_a_bundled_model_this_transformers_reads_wrong_is_refused(monkeypatch):
    """Under transformers 4, Gemma 3's GGUF tokenizer comes out wrong (docs/decisions.md): its folder is refused by
    wrap in one line; SmolLM2's is not, and gets its bundled id."""
    from isokl.core.model import bundled

    monkeypatch.setattr(bundled, "_major", lambda: 4)
    model, tok = loaded()
    model.config._name_or_path = str(bundled.cache_root() / "models" / "gemma3-270m")
    with pytest.raises(ValueError, match="gemma3-270m needs transformers >= 5: transformers .* builds its GGUF tokenizer wrong"):
        isokl.LM.wrap(model, tok)
    model.config._name_or_path = str(bundled.cache_root() / "models" / "smollm2-135m")
    assert isokl.LM.wrap(model, tok).id == "smollm2-135m"


USAGE = Path(__file__).parents[1] / "docs" / "usage.md"


def test_the_front_door_is_small_and_docs_usage_lists_exactly_its_names():
    """At most about 15 names in `isokl.`, each documented once in docs/usage.md's table of the Python API (a row per
    name, its first code span), and nothing in that table that `isokl.` does not export."""
    section = USAGE.read_text().split("## The Python API", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    documented = [re.match(r"\| `(?:isokl\.)?([A-Za-z_]+)", ln).group(1) for ln in rows]
    assert sorted(documented) == sorted(isokl.__all__) == sorted(n for n in dir(isokl) if not n.startswith("_"))
    assert len(isokl.__all__) <= 15
    for name in isokl.__all__:
        assert getattr(isokl, name) is not None


def test_the_previous_releases_names_and_keywords_work_with_a_warning_naming_the_new_one():
    from isokl.deprecated import NAMES

    for old, (_, _, instead) in NAMES.items():
        with pytest.warns(DeprecationWarning, match=re.escape(f"isokl.{old} is deprecated")):
            assert getattr(isokl, old) is not None
        assert instead
    model, tok = loaded()
    with pytest.warns(DeprecationWarning, match=r"isokl.LM.wrap"):
        lm = isokl.wrap(model, tok, id="tiny")
    assert lm.id == "tiny" and isokl.LM.wrap(model, tok, id="tiny").id == "tiny"
    res = isokl.calibrate_iso_kl(lm, isokl.extract(lm, PAIRS, "mean_diff", layers=(1, 2)), PROMPTS, T=6, progress=False)
    new = isokl.check(lm, res, PROMPTS, T=5, alpha=2.0)
    with pytest.warns(DeprecationWarning, match=r"positional window, alpha.*T=, alpha="):
        old = isokl.check(lm, res, PROMPTS, 5, 2.0)
    with pytest.warns(DeprecationWarning, match=r"check\(window=\).*T="):
        kw = isokl.check(lm, res, PROMPTS, window=5, alpha=2.0)
    assert old.p95 == kw.p95 == new.p95 and old.window == 5 and old.alpha == 2.0
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        isokl.check(lm, res, PROMPTS, 5, 2.0, "transformers")
    with pytest.warns(DeprecationWarning, match=r"generate\(tokens=\)"):
        g = isokl.generate(lm, res, "Hello", alphas=(1.0,), tokens=4)
    assert g.steered[0][0].text == isokl.generate(lm, res, "Hello", alphas=(1.0,), T=4).steered[0][0].text
    with pytest.warns(DeprecationWarning, match=r"calibrate\(verbose=\).*progress="):
        grid = isokl.calibrate(lm, res.vector, PROMPTS, T=6, verbose=False)
    assert grid[0].c_star == res.c_star
