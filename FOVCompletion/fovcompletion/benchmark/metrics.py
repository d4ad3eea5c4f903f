"""Quality metrics of a completion against the hidden truth, in the model orientation (slices, S-I rows, A-P cols).

Both images are first scaled to [0, 1] by the 0.5 and 99.5 percentiles of the visible region (the BraTS
inpainting protocol), so numbers compare across scanners; SSIM, PSNR and MAE are then taken over hidden pixels,
and over three bands: the first `near_mm` past the boundary, where the known part should steer the completion,
and beyond it; and the first `SEAM_MM`, where the anatomy just above the seam all but decides the truth (a
vertebra, the cord and the canal carry on across it), so a completion should be closest to it there.
`appearance` adds what a person sees at once (tissue SSIM, sharpness, seam brightness, canal continuity, slice
consistency, value-range violations).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..regions import row_distance_mm, scale_unit, visible_range

PSNR_CAP_DB = 100.0  # identical images: a finite, JSON-safe stand-in for infinity
NEAR_MM = 32.0
SEAM_MM = 8.0  # a latent cell of a /4 model at 2 mm
SSIM_SIGMA = 1.5  # the standard Gaussian-window SSIM (Wang et al. 2004): 11 x 11, sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM of each 2D slice (axis 0 = slices), Gaussian window; 1 where the images agree."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sigma = (0.0,) * (a.ndim - 2) + (SSIM_SIGMA, SSIM_SIGMA)

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=sigma, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def on_visible_scale(
    pred: np.ndarray, truth: np.ndarray, known_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both images scaled to [0, 1] by the truth's visible range, as every figure of `quality` reads them."""
    low, high = visible_range(truth, known_rows)
    return scale_unit(pred, low, high), scale_unit(truth, low, high)


def hidden_ssim(
    pred: np.ndarray, truth: np.ndarray, known_rows: np.ndarray, rows: slice | np.ndarray | None = None
) -> float:
    """`quality`'s SSIM over the hidden rows (or over `rows` of them), alone: the cheap score for choosing among
    fills by the truth."""
    known_rows = np.asarray(known_rows, dtype=bool)
    smap = ssim_map(*on_visible_scale(pred, truth, known_rows))
    return float(smap[:, ~known_rows if rows is None else rows].mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB over the given pixels, capped at PSNR_CAP_DB (identical images)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - b) ** 2))
    if mse <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range**2 / mse))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(a, dtype=np.float64) - b)))


def bands(known_rows: np.ndarray, spacing_mm: float, near_mm: float = NEAR_MM) -> dict[str, np.ndarray]:
    """Row masks: all hidden rows, the first `near_mm` past the boundary and beyond, and the first `SEAM_MM`."""
    distance = row_distance_mm(known_rows, spacing_mm)
    hidden = ~np.asarray(known_rows, dtype=bool)
    return {
        "": hidden,
        "_near": hidden & (distance <= near_mm + 1e-6),
        "_far": hidden & (distance > near_mm + 1e-6),
        "_seam": hidden & (distance <= SEAM_MM + 1e-6),
    }


def boundary_pairs(known_rows: np.ndarray) -> list[tuple[int, int]]:
    """(last known row, first hidden row) at each boundary between the visible and the hidden rows."""
    known_rows = np.asarray(known_rows, dtype=bool)
    pairs = []
    for row in range(len(known_rows) - 1):
        if known_rows[row] != known_rows[row + 1]:
            pairs.append((row, row + 1) if known_rows[row] else (row + 1, row))
    return pairs


def seam_statistic(
    pred: np.ndarray, truth: np.ndarray, known_rows: np.ndarray, spacing_mm: float, band_mm: float = 8.0
) -> tuple[float, float, float]:
    """How visible the seam is: (ratio, jump, natural).

    `jump` is the mean absolute intensity step of the completion across the boundary (last known row to first
    hidden row); `natural` the mean absolute step between neighbouring rows of the truth within `band_mm` of
    the boundary. The ratio is 1 for a seam as smooth as real anatomy, larger for a visible edge.
    """
    pairs = boundary_pairs(known_rows)
    if not pairs:
        return float("nan"), float("nan"), float("nan")
    jumps = [np.abs(pred[:, hidden] - pred[:, known]).mean() for known, hidden in pairs]
    reach = max(1, int(round(band_mm / spacing_mm)))
    steps = np.abs(np.diff(np.asarray(truth, dtype=np.float64), axis=1))  # step between row r and r + 1
    natural_rows = set()
    for known, hidden in pairs:
        low = min(known, hidden)
        natural_rows.update(range(max(0, low - reach), min(steps.shape[1], low + reach + 1)))
    natural = float(steps[:, sorted(natural_rows)].mean())
    jump = float(np.mean(jumps))
    return (jump / natural if natural > 1e-12 else float("inf") if jump > 0 else 1.0), jump, natural


def quality(
    pred: np.ndarray,
    truth: np.ndarray,
    known_rows: np.ndarray,
    spacing_mm: float,
    near_mm: float = NEAR_MM,
    *,
    spacing_ap_mm: float | None = None,
    input_range: tuple[float, float] | None = None,
    canal_cols: np.ndarray | None = None,
) -> dict[str, float]:
    """Every quality number of one completion; `pred` and `truth` share one grid (slices, rows, cols).

    `spacing_mm` is the superior-inferior spacing, `spacing_ap_mm` the anterior-posterior one (default: the
    same); `input_range` and `canal_cols` go to `appearance.appearance_metrics` (tissue SSIM, sharpness, seam
    brightness, canal continuity, canal reach, slice consistency, value-range violations).
    """
    from .appearance import appearance_metrics

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} are not on one grid")
    known_rows = np.asarray(known_rows, dtype=bool)
    low, high = visible_range(truth, known_rows)
    p, t = on_visible_scale(pred, truth, known_rows)
    smap = ssim_map(p, t)
    out: dict[str, float] = {}
    for suffix, rows in bands(known_rows, spacing_mm, near_mm).items():
        if not rows.any():
            out.update({f"ssim{suffix}": math.nan, f"psnr{suffix}": math.nan, f"mae{suffix}": math.nan})
            continue
        out[f"ssim{suffix}"] = float(smap[:, rows].mean())
        out[f"psnr{suffix}"] = psnr(p[:, rows], t[:, rows])
        out[f"mae{suffix}"] = mae(p[:, rows], t[:, rows])
    out["seam"], out["seam_jump"], out["seam_natural"] = seam_statistic(p, t, known_rows, spacing_mm)
    unclipped = scale_unit(pred[:, known_rows], low, high, clip=False) - scale_unit(
        truth[:, known_rows], low, high, clip=False
    )
    out["known_max_abs_err"] = float(np.abs(unclipped).max()) if unclipped.size else 0.0
    spacing = (float(spacing_mm), float(spacing_ap_mm if spacing_ap_mm is not None else spacing_mm))
    out.update(appearance_metrics(pred, truth, known_rows, spacing, smap, input_range, canal_cols))
    return out
