"""The math, no model: per-token KL of two logit sets (`kl`), the pooled statistic and its intervals (`statistic`),
and the search for the dose where the statistic meets its target (`solver`)."""
