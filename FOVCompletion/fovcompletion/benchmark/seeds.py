"""The sampler seed of each benchmark completion: one rule for the runner that draws them and for `compare`,
which pairs two runs' completions by it (and recovers it for runs that did not record it)."""

from __future__ import annotations

DRAW_SEED_STRIDE = 1000
# Our sampler's rows, the denoise ceilings and the noise baseline: each completion is one draw of its seed.
NOISE_FAMILIES = ("ours", "resample", "reference", "denoise", "noise")


def draw_seed(first: int, case_number: int, draw: int) -> int:
    """The sampler seed of one draw on one case: draw 0 is the seed a single-draw run uses, so adding draws never
    changes the first; later draws step by DRAW_SEED_STRIDE, past any case number of a run."""
    return first + case_number + DRAW_SEED_STRIDE * draw


def draws_noise(family: str) -> bool:
    """Whether a method family's rows draw noise from a seed (the others, such as the mirror and the ceilings
    without noise, give one completion per case, which stands beside every draw of the others)."""
    return family in NOISE_FAMILIES
