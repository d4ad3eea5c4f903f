"""Brightness matched where one window of a long completion takes over from the one before it.

Each later window continues the latent it is given, not the level of what an earlier window painted: down a 300 mm
completion of a cervical scan the first window continues the scan's coil-faded edge and the later ones climb back
towards the scan's usual brightness, one step per window (docs/training.md, "Brightness at the window joins"). The
cross-fade spreads each step over its rows, but a step of a quarter still shows as a line across the body. As a
panorama stitcher compensates each image's gain, the engine scales each later window's rows about black so that
they meet the rows they continue at the same mean brightness, and eases the correction out over the next
`EASE_OUT_MM`: the step is gone, the slow climb is partly kept, and no window is sampled differently (the gain is
applied once every window is made, so each is conditioned on exactly what it would be without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

JOIN_BAND_MM = 16.0  # rows either side of a join whose brightness is compared
# How far past the matched band the correction fades out: about the rows a window makes alone, far slower than the
# eye reads a step (a coil's fade changes as much over a similar length).
EASE_OUT_MM = 128.0
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


def join_log_gain(
    image: np.ndarray, window: WindowRows, black: float, band_rows: int, ease_rows: int
) -> np.ndarray | None:
    """Per row of `window`, the log gain that brings its rows to the level of the rows it continues: the whole
    step over the first `band_rows` it makes alone (the band it is matched on; fewer where it makes fewer), eased
    in over the rows it cross-fades (by its share of them) and eased out linearly over the next `ease_rows`; None
    where the rows it continues are the scan's (the first window) or a band holds no tissue."""
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
    past_band = np.arange(order.size) - (own_from + after.size)
    ease_out = np.clip(1.0 - (past_band + 1) / (ease_rows + 1), 0.0, 1.0)
    weight = np.empty(order.size, dtype=np.float64)
    weight[order] = (1.0 - window.keep[order]) * ease_out
    return -step * weight


def match_brightness_at_joins(
    image: np.ndarray, windows: list[WindowRows], black: float, band_rows: int, ease_rows: int
) -> None:
    """Scale each later window's rows of a completed mosaic (slices, S-I rows, A-P cols; in place), in the order
    they were made (each matched to what the one before it became), about `black` (the model value of no signal)
    by `join_log_gain`."""
    for window in windows:
        log_gain = join_log_gain(image, window, black, band_rows, ease_rows)
        if log_gain is None:
            continue
        changed = log_gain != 0  # the rows kept whole stay exactly as they are
        rows = np.arange(image.shape[1])[window.rows][changed]
        gain = np.exp(log_gain[changed])[None, :, None].astype(image.dtype)
        image[:, rows] = black + (image[:, rows] - black) * gain
