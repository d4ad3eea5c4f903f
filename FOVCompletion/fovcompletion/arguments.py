"""Checks of the values the Python API takes, so that a value of the wrong type is refused as the command line's
parser refuses it: one line of `InputError` before any model loads, never a TypeError from deep inside or a
number silently rounded."""

from __future__ import annotations

import math

import numpy as np

MAX_SEED = 2**64  # torch generators and numpy seed sequences both take 0 .. 2**64 - 1


def is_whole_number(value: object) -> bool:
    """An int or numpy integer, not a bool: what a count, an index or a seed must be."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int, float or numpy number, not a bool (NaN and infinities included: ranges are checked apart)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """A number that is neither NaN nor infinite: what millimetres must be."""
    return is_number(value) and math.isfinite(value)
