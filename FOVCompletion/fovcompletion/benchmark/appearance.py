"""Metrics of what a person sees at once in a completion: dim, blurry, a canal that fades, slices that disagree.

SSIM and MAE over the whole hidden region reward a grey blur (it is close to the mean) and are dominated by the
background (several real scans have a background of exact zeros, where any autoencoder paints a faint level).
These numbers look where the anatomy is. Unless said otherwise, images are scaled to [0, 1] by the 0.5/99.5
percentiles of the truth's visible rows and clipped (`regions.visible_range`); `known_rows` marks the visible
superior-inferior rows; arrays are (slices, S-I rows, A-P cols) on one grid.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..canal import CANAL_MIN_STRENGTH, canal_reach_mm, ridge_strength, strongest_near, track_canal
from ..regions import row_distance_mm, scale_unit, visible_range
from .metrics import ssim_map

SEAM_BAND_MM = 16.0
CANAL_BAND_MM = 64.0
CANAL_TOLERANCE_MM = 4.0
EDGE_SCALE_MM = 1.5  # finer than a cervical disc (~4 mm), coarser than a pixel's grain


def tissue_mask(truth_unit: np.ndarray, known_rows: np.ndarray) -> np.ndarray:
    """Pixels where the truth shows tissue: brighter than the median of its visible rows."""
    return truth_unit > float(np.median(truth_unit[:, known_rows]))


def ssim_tissue(ssim_values: np.ndarray, tissue: np.ndarray, hidden_rows: np.ndarray) -> float:
    """The SSIM map averaged over hidden pixels where the truth shows tissue (NaN if there are none).

    Steadier than whole-region SSIM, which a faint level painted on an exact-zero background moves by 0.2.
    """
    chosen = tissue[:, hidden_rows]
    return float(ssim_values[:, hidden_rows][chosen].mean()) if chosen.any() else math.nan


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """In-plane gradient magnitude per pixel (`numpy.gradient` over rows and columns, in pixels)."""
    d_rows, d_cols = np.gradient(np.asarray(image, dtype=np.float64), axis=(1, 2))
    return np.hypot(d_rows, d_cols)


def sharpness(pred_unit: np.ndarray, truth_unit: np.ndarray, hidden_rows: np.ndarray) -> float:
    """Mean gradient magnitude of the completion over the hidden rows, divided by the truth's.

    1 = as much detail as the real anatomy; a blurred copy scores below 1, added noise above.
    """
    truth_detail = float(gradient_magnitude(truth_unit)[:, hidden_rows].mean())
    if truth_detail <= 0:
        return math.nan
    return float(gradient_magnitude(pred_unit)[:, hidden_rows].mean()) / truth_detail


def edge_sharpness(
    pred_unit: np.ndarray, truth_unit: np.ndarray, hidden_rows: np.ndarray, spacing: tuple[float, float]
) -> float:
    """`sharpness` of both images smoothed by a Gaussian of EDGE_SCALE_MM: the anatomy's edges (discs, endplates,
    canal walls, millimetres wide) survive it and pixel-scale grain does not, so noise, which raises `sharpness`,
    does not raise this (texture as coarse as the anatomy still counts)."""
    sigma = (0.0, EDGE_SCALE_MM / spacing[0], EDGE_SCALE_MM / spacing[1])
    smooth = [
        ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), sigma)
        for image in (pred_unit, truth_unit)
    ]
    return sharpness(smooth[0], smooth[1], hidden_rows)


def seam_rows(known_rows: np.ndarray, spacing_mm: float, band_mm: float) -> np.ndarray:
    """Hidden rows within `band_mm` of the nearest visible row."""
    distance = row_distance_mm(known_rows, spacing_mm)
    return ~np.asarray(known_rows, dtype=bool) & (distance <= band_mm + 1e-6)


def seam_brightness(
    pred: np.ndarray,
    truth: np.ndarray,
    tissue: np.ndarray,
    known_rows: np.ndarray,
    spacing_mm: float,
    band_mm: float = SEAM_BAND_MM,
) -> float:
    """Mean of the completion over the truth's, in scanner units, in the first `band_mm` past the seam, over
    the pixels where the truth shows tissue: 1 = no dimming, 0.5 = half as bright (MR magnitudes are never
    negative, so the ratio of means is the dimming factor)."""
    rows = seam_rows(known_rows, spacing_mm, band_mm)
    chosen = tissue[:, rows]
    if not chosen.any():
        return math.nan
    truth_mean = float(np.asarray(truth, dtype=np.float64)[:, rows][chosen].mean())
    if truth_mean <= 0:
        return math.nan
    return float(np.asarray(pred, dtype=np.float64)[:, rows][chosen].mean()) / truth_mean


def canal_columns(truth_unit_mid: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The truth's canal column per row of a mid-sagittal slice, found by `canal.track_canal`."""
    return track_canal(ridge_strength(truth_unit_mid, spacing), spacing)


def canal_continuity(
    pred_unit_mid: np.ndarray,
    truth_unit_mid: np.ndarray,
    truth_canal: np.ndarray,
    known_rows: np.ndarray,
    spacing: tuple[float, float],
    band_mm: float = CANAL_BAND_MM,
) -> float:
    """Fraction of completed rows in the first `band_mm` past the seam where the completion shows a bright
    canal within `CANAL_TOLERANCE_MM` of the truth's canal column.

    On the mid-sagittal slice, per row: the strongest ridge (`canal.ridge_strength`: brighter than the
    tissue 10 mm anterior and posterior) within the tolerance of `truth_canal`. A bright canal is a ridge of
    at least `CANAL_MIN_STRENGTH` (in the [0, 1] units of the visible range), the same test in the truth and
    in the completion. Rows where the truth itself shows none (below the end of the dural sac, say) are not
    scored. 1 = the canal continues all the way; 0 = it is gone (or elsewhere) at once; NaN = no row scored.
    How bright it stays is `seam_brightness`'s business.
    """
    rows = seam_rows(known_rows, spacing[0], band_mm)
    reach = max(0, int(round(CANAL_TOLERANCE_MM / spacing[1])))
    truth_ridge = strongest_near(ridge_strength(truth_unit_mid, spacing), truth_canal, reach)
    pred_ridge = strongest_near(ridge_strength(pred_unit_mid, spacing), truth_canal, reach)
    scored = rows & (truth_ridge >= CANAL_MIN_STRENGTH)
    if not scored.any():
        return math.nan
    return float(np.mean(pred_ridge[scored] >= CANAL_MIN_STRENGTH))


def canal_reach(
    pred_unit_mid: np.ndarray,
    truth_unit_mid: np.ndarray,
    known_rows: np.ndarray,
    spacing: tuple[float, float],
) -> float:
    """The completion's `canal_reach_mm` over the truth's, each hidden block counted at most as far as the truth's:
    1 = its canal lasts as far as the real one (to the end of the dural sac, or of the truth's coil), 0.5 = it
    fades halfway. Unlike `canal_continuity` it follows the completed canal wherever it runs and over the whole
    completion, not the first 64 mm: what a reader sees of the canal in a long completion. NaN where the truth
    shows no canal past the seam."""
    truth_reach = canal_reach_mm(truth_unit_mid, known_rows, spacing)
    if sum(truth_reach) <= 0:
        return math.nan
    pred_reach = canal_reach_mm(pred_unit_mid, known_rows, spacing)
    return sum(min(p, t) for p, t in zip(pred_reach, truth_reach)) / sum(truth_reach)


def slice_consistency(
    pred_unit: np.ndarray, truth_unit: np.ndarray, tissue: np.ndarray, hidden_rows: np.ndarray
) -> float:
    """Mean SSIM between adjacent slices of the completion over the same for the truth, on the hidden pixels
    where the truth shows tissue in either slice of a pair: 1 = slices agree as much as real neighbours do,
    below 1 = they disagree more (each slice drew its own anatomy). NaN for fewer than two slices."""
    if pred_unit.shape[0] < 2:
        return math.nan
    chosen = (tissue[:-1] | tissue[1:])[:, hidden_rows]
    if not chosen.any():
        return math.nan

    def neighbours(image: np.ndarray) -> float:
        return float(ssim_map(image[:-1], image[1:])[:, hidden_rows][chosen].mean())

    truth_agreement = neighbours(truth_unit)
    return neighbours(pred_unit) / truth_agreement if truth_agreement > 0 else math.nan


def value_range_violations(pred: np.ndarray, input_range: tuple[float, float]) -> float:
    """Fraction of output voxels outside the input's own intensity range [min, max] (float rounding of a
    millionth of the range forgiven): an MR magnitude below the input's minimum is an error whatever the
    model; the known voxels are the input itself, so at most the hidden fraction can violate."""
    low, high = float(input_range[0]), float(input_range[1])
    slack = 1e-6 * max(high - low, 1e-12)
    values = np.asarray(pred, dtype=np.float64)
    return float(np.mean((values < low - slack) | (values > high + slack)))


def appearance_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    known_rows: np.ndarray,
    spacing: tuple[float, float],
    ssim_values: np.ndarray | None = None,
    input_range: tuple[float, float] | None = None,
    canal_cols: np.ndarray | None = None,
) -> dict[str, float]:
    """The eight numbers for one completion. `spacing` = (S-I, A-P) mm; `ssim_values` the SSIM map of the
    scaled images when the caller has it; `input_range` the (min, max) of what the method was given (default:
    the truth's visible rows); `canal_cols` the truth's canal column per row of the mid-sagittal slice
    (default: tracked on the truth)."""
    known_rows = np.asarray(known_rows, dtype=bool)
    hidden = ~known_rows
    low, high = visible_range(truth, known_rows)
    p, t = scale_unit(pred, low, high), scale_unit(truth, low, high)
    if ssim_values is None:
        ssim_values = ssim_map(p, t)
    tissue = tissue_mask(t, known_rows)
    mid = truth.shape[0] // 2
    if canal_cols is None:
        canal_cols = canal_columns(t[mid], spacing)
    if input_range is None:
        visible = np.asarray(truth)[:, known_rows]
        input_range = (float(visible.min()), float(visible.max()))
    return {
        "ssim_tissue": ssim_tissue(ssim_values, tissue, hidden),
        "sharpness": sharpness(p, t, hidden),
        "edge_sharpness": edge_sharpness(p, t, hidden, spacing),
        "seam_brightness": seam_brightness(pred, truth, tissue, known_rows, spacing[0]),
        "canal_continuity": canal_continuity(p[mid], t[mid], canal_cols, known_rows, spacing),
        "canal_reach": canal_reach(p[mid], t[mid], known_rows, spacing),
        "slice_consistency": slice_consistency(p, t, tissue, hidden),
        "value_range_violations": value_range_violations(pred, input_range),
    }
