"""Brightness matched where one window of a long completion takes over from the one before it.

Each later window continues the latent it is given, not the level of what an earlier window painted: down a 300 mm
completion of a cervical scan the first window continues the scan's coil-faded edge and the later ones climb back
towards the scan's usual brightness, one step per window (docs/training.md, "Brightness at the window joins"). The
cross-fade spreads each step over its rows, but a step of a quarter still shows as a line across the body. As a
panorama stitcher compensates each image's gain, the engine scales the rows before each join about black so that
they meet the later window at its own mean brightness, and eases the correction in over up to `EASE_MM` of the
generated rows before the join (never into the scan): the step is gone, the climb is kept as a slope, the last
window keeps the brightness it was drawn at (the farthest from the fade; unless it makes too few rows to set it),
and no window is sampled differently (the gain is applied once every window is made, so each is conditioned on
exactly what it would be without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

JOIN_BAND_MM = 16.0  # rows either side of a join whose brightness is compared
# How far before the matched band the correction fades in: about the rows a window makes alone, far slower than the
# eye reads a step (a coil's fade changes as much over a similar length).
EASE_MM = 128.0
RATIO_LIMITS = (0.5, 2.0)  # larger steps are not a gain: a band gone black or a different anatomy


@dataclass(frozen=True)
class WindowRows:
    """One window as the sampler placed it: its mosaic rows and, per row, the weight of what the row held before
    it (`seam.crossfade_weights`: 1 kept and given as context, 0 made by this window alone, between: made again
    and cross-faded), and which of them the scan did not give (only a join between two windows is matched: the
    seam at the scan is the feather's)."""

    rows: slice
    keep: np.ndarray
    generated: np.ndarray


def band_level(image: np.ndarray, rows: np.ndarray, black: float) -> float:
    """The mean above black of `rows` over every slice and column (slices, S-I rows, A-P cols): a line across the
    body is the whole band's change; of the statistics tried on v0.9.0's long completions it also evens the middle
    slice's brightest tissue best (docs/training.md, "Brightness matched at the window joins"). Values below black
    (the decoder's air undershoots it) count as black, as the written volume clips them."""
    return float(np.maximum(image[:, rows] - black, 0.0).mean())


def generated_rows(height: int, windows: list[WindowRows]) -> np.ndarray:
    """Which of a mosaic's `height` rows the windows made (the rest are the scan's, never scaled)."""
    generated = np.zeros(height, dtype=bool)
    for window in windows:
        generated[window.rows] |= window.generated
    return generated


def join_log_gain(
    image: np.ndarray, window: WindowRows, generated: np.ndarray, black: float, band_rows: int, ease_rows: int
) -> np.ndarray | None:
    """Per mosaic row, the log gain that brings the rows before `window`'s join to the level of the first
    `band_rows` it makes alone (fewer where it makes fewer): the whole step over the `band_rows` it continues, by
    the earlier content's share over the rows it makes again and cross-fades, eased in linearly over the
    `ease_rows` generated rows before the band (fewer where the scan comes sooner: the scan and the `band_rows`
    generated rows beside it, where the completion meets the scan, are never scaled). A last window that makes
    fewer rows than the band is too short to set the level of the rows before it: it is brought to theirs instead
    (it is the last of its direction, so no other join moves). None where the rows it continues are the scan's
    (the first window: its seam is the feather's), a band holds no tissue, or fewer than `band_rows` rows are left
    to ease over (a scan shorter than a window's context, extended both ways): a step squeezed into a few rows
    would be a line of its own."""
    kept = window.keep >= 1.0
    made = ~kept
    if not kept.any() or not made.any():
        return None
    index = np.arange(window.keep.size)
    downwards = index[kept].min() < index[made].min()  # the rows it continues lie above its own
    order = index if downwards else index[::-1]  # rows from the earlier content outwards
    first_made = int(np.argmax(made[order]))
    own_from = first_made + int(np.argmax(window.keep[order][first_made:] <= 0.0))
    before = order[max(first_made - band_rows, 0) : first_made]
    after = order[own_from : own_from + band_rows]
    if not before.size or not after.size or not window.generated[before].all():
        return None
    window_image = image[:, window.rows]
    earlier, later = band_level(window_image, before, black), band_level(window_image, after, black)
    if not (earlier > 0 and later > 0):
        return None
    step = math.log(float(np.clip(later / earlier, *RATIO_LIMITS)))
    mosaic_row = np.arange(image.shape[1])[window.rows]
    weight = np.zeros(image.shape[1], dtype=np.float64)
    if after.size < band_rows:
        later_rows = order[first_made:]
        weight[mosaic_row[later_rows]] = 1.0 - window.keep[later_rows]
        return -step * weight
    weight[mosaic_row[before]] = 1.0
    made_again = order[first_made:own_from]
    weight[mosaic_row[made_again]] = window.keep[made_again]
    farthest = mosaic_row[before[0]]  # the band's row farthest from the join; the ease lies beyond it
    beyond = np.arange(farthest - 1, -1, -1) if downwards else np.arange(farthest + 1, image.shape[1])
    room = beyond.size if generated[beyond].all() else int(np.argmin(generated[beyond])) - band_rows
    ease = min(ease_rows, room)
    if ease < band_rows:
        return None
    weight[beyond[:ease]] = 1.0 - np.arange(1, ease + 1) / (ease + 1)
    return step * weight


def match_brightness_at_joins(
    image: np.ndarray, windows: list[WindowRows], black: float, band_rows: int, ease_rows: int
) -> None:
    """Scale the rows before each join of a completed mosaic (slices, S-I rows, A-P cols; in place) about `black`
    (the model value of no signal) by `join_log_gain`, the last window's join first: each earlier window is
    brought to what the one after it became, and the last keeps the brightness it was drawn at."""
    generated = generated_rows(image.shape[1], windows)
    for window in reversed(windows):
        log_gain = join_log_gain(image, window, generated, black, band_rows, ease_rows)
        if log_gain is None:
            continue
        rows = np.flatnonzero(log_gain)  # the rows left whole stay exactly as they are
        gain = np.exp(log_gain[rows])[None, :, None].astype(image.dtype)
        image[:, rows] = black + (image[:, rows] - black) * gain
