"""The three bundled GGUF files under the running transformers: each loads with plain `from_pretrained(folder,
gguf_file=...)`; its token ids for one prompt (with and without special tokens) and its next-token logits on the
ids without specials are saved, or compared with those another environment saved (run on that environment's ids, so
the numbers compare the weights and the forward, not the tokenizers).

    .venv/bin/python scripts/floor_gguf.py --save /tmp/tf5.pt              # transformers 5 (the main environment)
    .venv-floor/bin/python scripts/floor_gguf.py --compare /tmp/tf5.pt     # the floor, 4.56.0: the same numbers?
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from isokl.core.model.bundled import BUNDLED, gguf_path

PROMPT = "The capital of France is"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", help="write {model id: logits} here")
    ap.add_argument("--compare", help="compare with the logits another environment saved here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    other = torch.load(args.compare) if args.compare else {}
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    saved = {}
    for mid, b in BUNDLED.items():
        src, t0 = gguf_path(b), time.time()
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        plain = tok(PROMPT, add_special_tokens=False)["input_ids"]  # what isokl encodes for a chat prompt
        special = tok(PROMPT)["input_ids"]  # what it encodes for a plain-text (base model) prompt
        ref = other.get(mid)
        ids = torch.tensor([ref["plain"] if ref else plain])
        with torch.no_grad():
            got = model(input_ids=ids).logits[0, -1]
        saved[mid] = {"plain": plain, "special": special, "logits": got}
        line = f"{mid}: {type(model).__name__} loaded in {time.time() - t0:.0f} s, next token {tok.decode(got.argmax())!r}"
        if ref:
            diff = float((got - ref["logits"]).abs().max())
            theirs = ref["special"]
            with_specials = "equal" if special == theirs else f"DIFFER ({special} here, {theirs} there)"
            without = "equal" if plain == ref["plain"] else "DIFFER"
            top = float(ref["logits"].abs().max())
            line += f"; ids without specials {without}, with specials {with_specials}"
            line += f"; max |logit - the other's| = {diff:.3g} (logits up to {top:.3g})"
        print(line, flush=True)
    if args.save:
        torch.save(saved, args.save)


if __name__ == "__main__":
    main()
