"""The bright spinal canal of a sagittal T2w slice, row by row: for the benchmark's canal metrics and for the
engine's choice among candidate completions (`candidates`).

On T2w images the cerebrospinal fluid around the cord is the brightest long, narrow band of the spine; a
completion that loses it (the canal fading a few centimetres past the seam) is what a reader notices first.
`ridge_strength` measures how much brighter each pixel is than the tissue `side_mm` to either side of it
(anterior and posterior), `track_canal` follows the strongest such ridge through every row (a path that moves
at most one pixel sideways per millimetre), for scans that come without a centreline, and `canal_reach_mm` says
how far past the seam a bright canal lasts on that track. Images are scaled to [0, 1] first
(`regions.visible_range`), so strengths are fractions of the visible range.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .regions import hidden_blocks, row_distance_mm

SIDE_MM = 10.0  # a canal is at most about 20 mm across (lumbar sac): its centre is brighter than +-10 mm
SMOOTH_MM = (2.0, 1.0)  # Gaussian smoothing (S-I, A-P) before the ridge test: noise and the cord inside it
BACK_MM = 25.0  # the canal lies at least this deep under the skin of the back (subcutaneous fat is brighter)
TISSUE_FRACTION = 0.15  # of a row's brightest value: brighter is the body, darker is air (rows fade, too)
# A bright canal: this much (of the visible range) brighter than the tissue beside it.
CANAL_MIN_STRENGTH = 0.1
CANAL_RUN_MM = 8.0  # canal reach averages the ridge over this many mm of rows: about a disc and a half


def ridge_strength(
    image2d: np.ndarray, spacing_mm: tuple[float, float], side_mm: float = SIDE_MM
) -> np.ndarray:
    """Per pixel (rows S-I, cols A-P): smoothed value minus the brighter of its two sides `side_mm` away.

    Positive only where the pixel is brighter than both sides, i.e. on a bright band narrower than
    2 x `side_mm`; in the units of the image (the metrics pass images scaled to [0, 1]).
    """
    image = np.asarray(image2d, dtype=np.float64)
    sigma = (SMOOTH_MM[0] / spacing_mm[0], SMOOTH_MM[1] / spacing_mm[1])
    smooth = ndimage.gaussian_filter(image, sigma, mode="nearest")
    shift = max(1, int(round(side_mm / spacing_mm[1])))
    padded = np.pad(smooth, ((0, 0), (shift, shift)), mode="edge")
    posterior = padded[:, : smooth.shape[1]]
    anterior = padded[:, 2 * shift :]
    strength = smooth - np.maximum(posterior, anterior)
    return np.where(under_the_back(smooth, spacing_mm), strength, -np.inf)


def under_the_back(smooth: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """True from `BACK_MM` anterior of each row's posterior skin line on (the first column brighter than
    `TISSUE_FRACTION` of the row's maximum, smoothed over 20 mm of rows); everywhere in empty rows."""
    peak = smooth.max(axis=1, keepdims=True)
    inside = (smooth > TISSUE_FRACTION * peak) & (peak > 0)
    has_body = inside.any(axis=1)
    first = np.where(has_body, np.argmax(inside, axis=1), 0).astype(np.float64)
    rows = max(1, int(round(20.0 / spacing_mm[0]))) | 1
    skin = ndimage.median_filter(first, size=rows, mode="nearest")
    limit = skin + BACK_MM / spacing_mm[1]
    return np.arange(smooth.shape[1])[None, :] >= np.where(has_body, limit, 0.0)[:, None]


def track_canal(strength: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Column of the canal in every row: the path through all rows with the largest summed ridge strength
    that moves at most one column per millimetre of rows (dynamic programming, exact)."""
    strength = np.asarray(strength, dtype=np.float64)
    n_rows, n_cols = strength.shape
    reach = max(1, int(math.ceil(spacing_mm[0] / spacing_mm[1] - 1e-6)))
    score = strength[0].copy()
    back = np.zeros((n_rows, n_cols), dtype=np.int64)
    columns = np.arange(n_cols)
    for row in range(1, n_rows):
        padded = np.pad(score, reach, constant_values=-np.inf)
        options = np.stack([padded[k : k + n_cols] for k in range(2 * reach + 1)])
        best = np.argmax(options, axis=0)
        back[row] = columns + best - reach
        score = options[best, columns] + strength[row]
    path = np.zeros(n_rows, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for row in range(n_rows - 1, 0, -1):
        path[row - 1] = back[row, path[row]]
    return path.astype(np.float64)


def strongest_near(strength: np.ndarray, columns: np.ndarray, reach_px: int) -> np.ndarray:
    """Per row, the largest ridge strength within `reach_px` columns of `columns[row]`."""
    n_rows, n_cols = strength.shape
    out = np.full(n_rows, -np.inf)
    for row in range(n_rows):
        if not math.isfinite(columns[row]):
            continue
        centre = int(round(columns[row]))
        low, high = max(0, centre - reach_px), min(n_cols, centre + reach_px + 1)
        if low < high:
            out[row] = float(strength[row, low:high].max())
    return out


def ridge_on_track(image_unit_mid: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Per row, the ridge strength on the canal tracked in the image itself (0 in rows without tissue)."""
    strength = ridge_strength(image_unit_mid, spacing)
    track = track_canal(strength, spacing).astype(int)
    on_track = strength[np.arange(strength.shape[0]), track]
    return np.where(np.isfinite(on_track), on_track, 0.0)


def canal_reach_mm(
    image_unit_mid: np.ndarray, known_rows: np.ndarray, spacing: tuple[float, float]
) -> list[float]:
    """How far past the seam a bright canal lasts in one image, in mm, for each hidden block.

    Along the canal tracked in the image itself (`ridge_on_track`, wherever it runs), away from the seam: the
    last row before the ridge on the track, averaged over `CANAL_RUN_MM` of rows, falls below
    `CANAL_MIN_STRENGTH`. The average forgives a short dropout (a bulging disc) and, as a canal is long and
    noise is not, keeps the track from scoring a noisy completion as a canal. Needs no truth, so it also
    measures completions longer than any truth. A block between two visible parts is walked from both seams."""
    return reach_along_track(ridge_on_track(image_unit_mid, spacing), known_rows, spacing[0])


def reach_along_track(on_track: np.ndarray, known_rows: np.ndarray, spacing_si_mm: float) -> list[float]:
    """`canal_reach_mm` from the ridge on the track (`ridge_on_track`), for callers that also need the ridge."""
    run_rows = max(1, int(round(CANAL_RUN_MM / spacing_si_mm)))
    hidden = ~np.asarray(known_rows, dtype=bool)

    def run_mean(values: np.ndarray) -> np.ndarray:  # over hidden rows only: the scan's canal carries nothing
        return ndimage.uniform_filter1d(values * hidden, run_rows, mode="constant")

    bright = run_mean(on_track) >= CANAL_MIN_STRENGTH * run_mean(np.ones_like(on_track))
    distance = row_distance_mm(known_rows, spacing_si_mm)
    reaches = []
    for block in hidden_blocks(known_rows):
        if block.start == 0 and block.stop == len(known_rows):
            continue  # nothing visible: no seam to start from
        rows = np.arange(block.start, block.stop)
        reach = 0.0
        for row in rows[np.argsort(distance[rows], kind="stable")]:
            if not bright[row]:
                break
            reach = float(distance[row])
        reaches.append(reach)
    return reaches
