"""How large a step in brightness a ratio of two means is, either way: the long completions' window joins read it,
and `compare` judges two runs' joins by it without loading the engine."""

from __future__ import annotations

import math
from collections.abc import Iterable


def join_step(ratio: float) -> float:
    """|log ratio|: 1.25 and 0.8 are the same step, 1 none, 0 (a band gone black) the largest."""
    return math.inf if ratio == 0 else abs(math.log(ratio))


def farthest_from_one(ratios: Iterable[float | None]) -> float:
    """The ratio with the largest step either way; NaN without a number among them."""
    finite = [ratio for ratio in ratios if ratio is not None and math.isfinite(ratio) and ratio >= 0]
    return max(finite, key=join_step) if finite else math.nan
