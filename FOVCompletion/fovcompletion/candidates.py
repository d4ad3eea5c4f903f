"""Choosing the best of several candidate completions of a window without a truth: the one whose canal lasts.

Why: one draw of the sampler often lets the bright canal break off a few centimetres past the seam while another
draw of the same window carries it on (over three draws the seed alone moved a held-out case's canal continuity
from 0.71 to 1.00), and a canal that breaks off is what a reader of a completed spine notices first. Drawing K
candidates and keeping the one whose canal reaches furthest costs K times the UNet passes and needs no truth:
the score reads only the candidate itself, as the benchmark's canal reach does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .canal import reach_along_track, ridge_on_track
from .regions import scale_unit, visible_range


class CanalScore(NamedTuple):
    """Higher is better, compared in order: how far the canal lasts past the seam, then how bright it is."""

    reach_mm: float  # summed over the new blocks of rows (`canal.canal_reach_mm`)
    ridge: float  # mean ridge on the canal's track over the new rows, in fractions of the visible range


def canal_score(
    window: np.ndarray,
    known_rows: np.ndarray,
    spacing: tuple[float, float],
    scale: tuple[float, float] | None = None,
) -> CanalScore:
    """The canal of a completed window's middle slice (`window`: slices, S-I rows, A-P cols); `known_rows` marks
    the rows that were given, the rest were made. `scale` (low, high) is what counts as the visible range, the
    scan's in the engine, so that every window of a long completion is held to the brightness of the scan itself
    and not of the completion it continues (default: the window's known rows)."""
    known_rows = np.asarray(known_rows, dtype=bool)
    if known_rows.all() or not known_rows.any():
        return CanalScore(0.0, 0.0)  # nothing made, or no seam to start from: every candidate is alike
    low, high = visible_range(window, known_rows) if scale is None else scale
    middle = scale_unit(window[window.shape[0] // 2], low, high)
    on_track = ridge_on_track(middle, spacing)
    reach = sum(reach_along_track(on_track, known_rows, spacing[0]))
    return CanalScore(float(reach), float(on_track[~known_rows].mean()))


def best_candidate(scores: list[CanalScore]) -> int:
    """Index of the best score (the first of equals, so that one candidate is the plain sampler's draw)."""
    return max(range(len(scores)), key=lambda index: (scores[index], -index))
