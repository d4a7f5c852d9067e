"""Extract: contrast pairs -> a fitted, uncalibrated Vector (`extract`), from their block outputs at the last token.

Each pair shares the user message and the assistant prefix and differs only in the
persona, so the last-token difference isolates the persona's concept (DESIGN.md s.2).
"""

from __future__ import annotations

from .formats.vector import Vector
from .methods import get_method
from .model.hooks import default_layers
from .model.inputs import as_lm, as_pairs
from .model.models import LM
from .model.prompts import Pair, prompt_hash
from .model.reading import last_token


def extract(lm: LM, pairs: list[Pair], method: str, layers: tuple[int, ...] | None = None, **config) -> Vector:
    """Fit `method` on contrast pairs at `layers` (default: middle 25%-75% band) -> uncalibrated Vector.
    lm: an LM or (model, tokenizer); pairs: (positive, negative) tuples of strings (full texts) or chat message lists,
    or `Pair` (`inputs.as_pairs`). config: the method's hyperparameters (`get_method(name).config` lists them)."""
    lm, pairs = as_lm(lm), as_pairs(pairs)
    m = get_method(method)
    unknown = set(config) - set(m.config)
    if unknown:
        raise ValueError(
            f"{method} has no setting(s) {', '.join(sorted(unknown))}; its settings: {', '.join(m.config) or 'none'}"
        )
    config = {**m.config, **config}
    layers = tuple(layers) if layers is not None else default_layers(lm.n_layers)
    bad = [x for x in layers if not 0 <= x < lm.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range for {lm.id} with {lm.n_layers} blocks")
    acts = last_token(lm, [p.positive for p in pairs] + [p.negative for p in pairs], layers)  # [l 2n d]
    pos, neg = acts[:, : len(pairs)], acts[:, len(pairs) :]
    fit = m.fit(pos, neg, config)
    directions = fit.directions  # [l d]
    return Vector(
        method=method,
        layers=layers,
        directions=directions,
        extra=dict(fit.extra),
        config=config,
        model_id=lm.id,
        resid_norm=float(acts.norm(dim=-1).mean()),
        diff_norm=float((pos - neg).mean(dim=1).norm(dim=-1).mean()),
        proj_mean=float((acts * directions[:, None]).sum(-1).abs().mean()),
        pairs_hash=prompt_hash([p.positive for p in pairs] + [p.negative for p in pairs]),
    )
