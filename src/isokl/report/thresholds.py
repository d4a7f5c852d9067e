"""Thresholds: the spec's numbers that turn measurements into verdicts (R1-R6), in one place (no torch).

R1-R5 are the spec's (`docs/spec/iso-kl-figure-spec.md`); R6's number was fixed before the first
study ran (`docs/decisions.md`). Table 1 counts cells against them, claims.md judges with them, and
`isokl check` prints R1's band.
"""

HOLDOUT_BAND = (0.7, 1.4)  # R1: held-out p95 at c* lies in this band (nats)
NLL_OK, NLL_HOT = 2.0, 4.0  # R3: base NLL ratio <= 2 at 1x; > 4 at 2x for at least one method per model
PMASS_OK, PMASS_HOT = 0.1, 0.3  # R4: pmass within 0.1 of base at 1x; a drop of more than 0.3 at 2x
R6_SPREAD = 0.5  # R6: nats, median over t of the across-seed range of per-token p95 at 1x
REPETITIVE = 0.5  # not the spec's: a rollout with distinct-3 below this is a loop (docs/decisions.md, "A degeneration measure")


def in_band(x: float) -> bool:
    """R1's test of one held-out p95."""
    return HOLDOUT_BAND[0] <= x <= HOLDOUT_BAND[1]
