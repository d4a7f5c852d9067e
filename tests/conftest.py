"""Tiny random models built from a config (no download), shared by the unit tests."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from isokl import cli
from isokl.core.model.models import from_module, set_threads

set_threads()  # $ISOKL_THREADS, else every core this process may use (run the suite with 1 and with 2)

# Two routes to the same float64 logits (another batch size, a drafted pass) differ by ~1e-15; the rollout
# scores in float32, where such a difference can flip the last bit of a logit, and a KL or log-prob summed
# over the vocabulary then moves by a few float32 ulps (eps = 1.2e-7, relative). 1e-5 relative (~100 ulps)
# plus 1e-6 absolute (values near 0) bounds that on any CPU and thread count; a changed token moves these
# values by orders of magnitude more.
F32 = dict(rtol=1e-5, atol=1e-6)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eot>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with no merges: 256 byte tokens + specials, built offline."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in ("<pad>", "<bos>", "<eos>", "<eot>"):
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", additional_special_tokens=["<eot>"]
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(arch: str = "llama", dtype=torch.float64, seed: int = 0, layers: int = 4):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=260,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=256,
        bos_token_id=257,
        eos_token_id=258,
    )
    cfg = {
        "llama": lambda: LlamaConfig(**common),
        "qwen2": lambda: Qwen2Config(**common),
        "gemma3": lambda: Gemma3TextConfig(**common, head_dim=8, sliding_window=512),
        "gpt_neox": lambda: GPTNeoXConfig(**{k: v for k, v in common.items() if k != "num_key_value_heads"}),
    }[arch]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    # Random init is close to uniform; a larger logit scale gives the rollouts real structure.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    return model


@pytest.fixture(params=["llama", "qwen2", "gemma3", "gpt_neox"])
def tiny_lm(request):
    return from_module(tiny_model(request.param), byte_tokenizer(), id=f"tiny-{request.param}")


@pytest.fixture
def llama_lm():
    return from_module(tiny_model("llama"), byte_tokenizer(), id="tiny-llama")


@pytest.fixture
def no_load(monkeypatch):
    """Fails the test if a model is loaded."""
    from isokl.core.model import models

    def load(*a, **k):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(models, "load", load)


@pytest.fixture(scope="session")
def six_layer_dir(tmp_path_factory):
    """A tiny 6-layer llama saved as a model folder (float32), for the CLI's grid and judge tests."""
    d = tmp_path_factory.mktemp("models") / "tiny-grid"
    tiny_model("llama", dtype=torch.float32, seed=3, layers=6).save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return d


# ---- helpers shared by several test files -------------------------------------------------------------------


def saved_model(tmp_path_factory, name: str, seed: int, layers: int = 4) -> Path:
    """A tiny random Llama saved as a local model folder: it loads through the real `isokl.core.model.models.load`."""
    d = tmp_path_factory.mktemp("models") / name
    tiny_model("llama", dtype=torch.float32, seed=seed, layers=layers).save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return d


def files_of(d: Path) -> dict[str, float]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*")}


def one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("isokl"), err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def main_exit(args) -> int:
    try:
        return cli.main(args)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        return e.code


def run_refused(args, tmp_path, capsys, code, *names):
    before = files_of(tmp_path)
    assert main_exit(args) == code
    line = one_line_error(capsys, *names)
    assert files_of(tmp_path) == before  # nothing written or changed
    return line


USERS = ["Tell me about rivers.", "Describe a quiet library.", "What is a good breakfast?", "Explain how kites fly."]


def write_concept(d: Path, n_pairs: int = 12, probes: bool = True, own_prompts: bool = False) -> Path:
    """A small concept folder written from docs/concepts.md alone."""
    d.mkdir(parents=True, exist_ok=True)
    with (d / "pairs.jsonl").open("w") as f:
        for i in range(n_pairs):
            row = {"id": f"p{i}", "system_positive": "You are formal.", "system_negative": "You are casual."}
            f.write(json.dumps({**row, "user": f"{USERS[i % 4]} ({i})"}) + "\n")
    if probes:
        (d / "probes.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "user": u}) + "\n" for i, u in enumerate(USERS)))
        (d / "words.json").write_text(json.dumps({"positive": ["dear", "regards"], "negative": ["hey", "yo"]}))
    if own_prompts:
        (d / "calibration.jsonl").write_text("".join(json.dumps({"user": f"Say something about {w}."}) + "\n" for w in "abcdef"))
        (d / "heldout.jsonl").write_text("".join(f"Tell me a story about {w}.\n" for w in ("cats", "dogs", "owls", "foxes")))
    (d / "concept.json").write_text(json.dumps({"name": "formality", "description": "formal vs casual"}))
    return d


def exit_of(vectors) -> int:
    """What `isokl calibrate` must exit with for the vectors it saved: 0 when every one converged, else 2."""
    from isokl.core.formats.vector import Vector

    return 0 if all(Vector.load(p).calibration.converged for p in vectors) else 2


def grid_exit(grid_dir: Path) -> int:
    """The same for a calibrated grid folder: its vectors (the controls' status does not set the exit code)."""
    import csv

    rows = list(csv.DictReader((Path(grid_dir) / "grid.csv").read_text().splitlines()))
    return exit_of([Path(grid_dir) / r["file"] for r in rows if r.get("rank", "") != "control"])
