"""Reading: a model's block outputs at the last token of each prompt, [l n d] (what `extract` fits a method on and
what a vector's scale is measured from).
"""

from __future__ import annotations

import torch

from .hooks import capture
from .models import LM, forward, left_pad, pad_id
from .prompts import Prompt


@torch.no_grad()
def last_token(lm: LM, prompts: list[Prompt], layers: tuple[int, ...]) -> torch.Tensor:
    """Block outputs at the last token of each prompt: [l n d] (left padding puts it at position -1)."""
    seqs = lm.encode([lm.format(p) for p in prompts])
    ids, mask, pos = left_pad(seqs, pad_id(lm), lm.device)
    with capture(lm.model, layers) as store:
        forward(lm.model, ids, mask, pos, keep=1)
    return torch.stack([store[layer][:, -1].float() for layer in layers])
