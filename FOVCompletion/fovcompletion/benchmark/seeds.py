"""The sampler seed of each benchmark completion: one rule for the runner that draws them and for `compare`,
which pairs two runs' completions by it (and recovers it for runs that did not record it)."""

from __future__ import annotations

DRAW_SEED_STRIDE = 1000


def draw_seed(first: int, case_number: int, draw: int) -> int:
    """The sampler seed of one draw on one case: draw 0 is the seed a single-draw run uses, so adding draws never
    changes the first; later draws step by DRAW_SEED_STRIDE, past any case number of a run."""
    return first + case_number + DRAW_SEED_STRIDE * draw
