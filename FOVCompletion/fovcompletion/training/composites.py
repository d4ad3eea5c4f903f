"""Whole-spine training composites: slabs of different sources joined top to bottom on one model grid.

No real scan here covers the whole spine, yet every cervical scan a user completes needs thoracic anatomy
below cervical anatomy. A composite stacks a real cervical scan, a (bent) thoracic template and a real lumbar
scan, each owning the rows between two joins and blended linearly across each join where both hold data.
Whatever no part covers stays unknown (`valid` False): never a training target.

These are plain array operations on (slices, rows S->I, cols A-P) slabs; `whole_spine` decides what to join
where.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class PlacedPart:
    """A slab and where its pixel (0, 0) lies on the composite grid (`top` row, `left` column)."""

    image: np.ndarray
    valid: np.ndarray
    top: int = 0
    left: int = 0

    @property
    def bottom(self) -> int:
        return self.top + self.image.shape[1]

    @property
    def right(self) -> int:
        return self.left + self.image.shape[2]


def join_parts(
    parts: list[PlacedPart], joins: list[int], feather_rows: int, fill: float
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Stack `parts` top to bottom: part i owns the composite rows from `joins[i-1]` to `joins[i]`.

    Across each join the two parts are blended linearly over `feather_rows` rows (centred on the join) where
    both hold data; where only one does, it is taken as it is, and where the owning part has none (outside a
    template's narrow field) the pixel stays unknown. Rows and columns are composite coordinates;
    the result starts at the smallest `top`/`left` of the parts, returned with it as (image, valid, top, left).
    """
    if len(joins) != len(parts) - 1:
        raise ValueError(f"{len(parts)} parts need {len(parts) - 1} joins (got {len(joins)})")
    if np.any(np.diff(joins) <= 0):
        raise ValueError(f"joins must increase from top to bottom (got {joins})")
    slices = parts[0].image.shape[0]
    top, left = min(p.top for p in parts), min(p.left for p in parts)
    rows, cols = max(p.bottom for p in parts) - top, max(p.right for p in parts) - left
    weight_sum = np.zeros((slices, rows, cols), np.float64)
    value_sum = np.zeros((slices, rows, cols), np.float64)
    composite_rows = np.arange(top, top + rows) + 0.5  # pixel centres
    bounds = [-np.inf, *joins, np.inf]
    half = feather_rows / 2
    for index, part in enumerate(parts):
        start, stop = bounds[index], bounds[index + 1]
        # 1 inside the part's own rows, ramping to 0 across `feather_rows` at each of its joins.
        ramp_in = np.clip((composite_rows - (start - half)) / max(feather_rows, 1e-9), 0, 1)
        ramp_out = np.clip(((stop + half) - composite_rows) / max(feather_rows, 1e-9), 0, 1)
        row_weight = np.minimum(ramp_in, ramp_out)
        r0, c0 = part.top - top, part.left - left
        r1, c1 = r0 + part.image.shape[1], c0 + part.image.shape[2]
        weight = row_weight[r0:r1][None, :, None] * part.valid
        weight_sum[:, r0:r1, c0:c1] += weight
        value_sum[:, r0:r1, c0:c1] += weight * part.image
    valid = weight_sum > 0
    image = np.where(valid, value_sum / np.where(valid, weight_sum, 1.0), fill).astype(np.float32)
    return image, valid, top, left


def shift_rows(
    image: np.ndarray, valid: np.ndarray, shifts: np.ndarray, fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Move each row of a (slices, rows, cols) slab `shifts[row]` columns (fractional, linear): a smooth
    profile bends a straight template into a curved spine. Pixels shifted in from outside are unknown."""
    out = np.empty_like(image, dtype=np.float32)
    out_valid = np.empty_like(valid, dtype=bool)
    for row, shift in enumerate(shifts):
        out[:, row] = ndimage.shift(image[:, row], (0, shift), order=1, mode="constant", cval=fill)
        moved = ndimage.shift(valid[:, row].astype(np.float32), (0, shift), order=1, mode="constant")
        out_valid[:, row] = moved > 0.999
    out[~out_valid] = fill
    return out, out_valid


def kyphosis_profile(t: np.ndarray, start_shift: float, end_shift: float, bow: float) -> np.ndarray:
    """Column shift at positions `t` (0 and 1 at the two joins): a straight line from `start_shift` to
    `end_shift`, extended past the joins, plus a half-sine `bow` between them (negative bows posteriorly, as
    the thoracic spine does)."""
    return start_shift + (end_shift - start_shift) * t + bow * np.sin(np.pi * np.clip(t, 0.0, 1.0))


def smooth_profile(rng: np.random.Generator, rows: int, amplitude: float, sigma_rows: float) -> np.ndarray:
    """A random smooth column-shift profile with peak magnitude `amplitude`: lordoses and kyphoses."""
    noise = ndimage.gaussian_filter1d(rng.normal(size=rows), sigma_rows, mode="reflect")
    noise -= noise.mean()
    peak = np.abs(noise).max()
    return noise * (amplitude / peak) if peak > 0 else noise


def noise_level(image: np.ndarray, valid: np.ndarray) -> float:
    """Robust standard deviation of the finest detail (image minus its 1-pixel Gaussian blur) over `valid`."""
    detail = image - ndimage.gaussian_filter(image, sigma=(0, 1, 1))
    values = detail[valid]
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))
