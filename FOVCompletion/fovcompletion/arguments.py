"""Checks of the values the Python API takes, so that a value of the wrong type is refused as the command line's
parser refuses it: one line of `InputError` before any model loads, never a TypeError from deep inside or a
number silently rounded."""

from __future__ import annotations

import math

import numpy as np

MAX_SEED = 2**64  # torch generators and numpy seed sequences both take 0 .. 2**64 - 1

# The most the two extensions may add together. A whole adult spine, skull base to coccyx, is well under a
# metre, so no body needs more: a larger value is a typo (100000 for 100 mm) that would otherwise run for hours.
# Here, not in `layout`, so that the Slicer panel checks it before the engine's dependencies are installed.
MAX_TOTAL_EXTENSION_MM = 1500.0


def is_whole_number(value: object) -> bool:
    """An int or numpy integer, not a bool: what a count, an index or a seed must be."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int, float or numpy number, not a bool (NaN and infinities included: ranges are checked apart)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """A number that is neither NaN nor infinite: what millimetres must be."""
    return is_number(value) and math.isfinite(value)
