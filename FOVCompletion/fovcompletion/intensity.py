"""Per-volume intensity normalisation, as the bundle prescribes, and its inverse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .bundle import IntensitySpec
from .errors import InputError

GAIN_PERCENTILE = 95.0  # a row's bright tissue (fluid, fat) while the body fills more than 5% of the row
GAIN_LIMITS = (0.3, 3.0)  # relative to the median row: noise in near-empty edge rows is not amplified


def row_gain(slab: np.ndarray, spacing_si_mm: float, sigma_mm: float) -> np.ndarray:
    """The slow superior-inferior gain of a slab (slices, S-I rows, A-P cols), median 1, one value per row.

    Surface receive coils make regional scans fade towards the ends of their field of view (cervical scans
    to about a third of their brightness at the inferior edge), and a model trained on such windows can learn
    to continue the fade instead of the anatomy. Dividing it out before normalisation, and multiplying the
    edge gain back onto generated rows, keeps the fade out of what the networks see (whether that completes
    better is measured in docs/training.md). The gain is `row_level` as `gain_of_level` gives it.
    """
    return gain_of_level(*row_level(slab, spacing_si_mm, sigma_mm))[0]


def gain_of_level(level: np.ndarray, anatomy: np.ndarray) -> tuple[np.ndarray, float]:
    """A `row_level` over its median row of anatomy, within `GAIN_LIMITS` (noise in near-empty edge rows is not
    amplified), and that median; all ones (and a median of 0) without anatomy."""
    usual = float(np.median(level[anatomy])) if anatomy.any() else 0.0
    if not usual > 0:
        return np.ones(level.shape, dtype=np.float32), 0.0
    return np.clip(level / usual, *GAIN_LIMITS).astype(np.float32), usual


def row_level(slab: np.ndarray, spacing_si_mm: float, sigma_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's slow bright-tissue level in the slab's units (slices, S-I rows, A-P cols), and which rows hold
    anatomy (none: the level is all zeros).

    The rows' 95th percentiles are smoothed by a local linear fit with Gaussian weights of width `sigma_mm`
    over the rows that hold anatomy: unlike a moving average, it follows a fade all the way to the edge of the
    scan. Past the anatomy the level holds the end row's value.
    """
    rows = np.moveaxis(slab, 1, 0).reshape(slab.shape[1], -1)
    level = np.percentile(rows, GAIN_PERCENTILE, axis=1).astype(np.float64)
    anatomy = level > 0.05 * level.max() if level.max() > 0 else np.zeros(level.shape, dtype=bool)
    if not anatomy.any():
        return np.zeros_like(level), anatomy
    weight = anatomy.astype(np.float64)
    sigma = sigma_mm / spacing_si_mm
    x = (np.arange(level.size) - level.size / 2) / sigma  # centred and scaled: no cancellation below

    def smooth(values: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter1d(values * weight, sigma, mode="constant")

    s0, s1, s2 = smooth(np.ones_like(x)), smooth(x), smooth(x * x)
    t0, t1 = smooth(level), smooth(x * level)
    determinant = s0 * s2 - s1 * s1
    fits = determinant > 1e-9 * np.maximum(s0, 1e-12) ** 2  # else too few rows around for a slope
    fitted = (s2 * t0 - s1 * t1 + x * (s0 * t1 - s1 * t0)) / np.where(fits, determinant, 1.0)
    smoothed = np.where(fits, fitted, t0 / np.maximum(s0, 1e-12))
    first, last = np.flatnonzero(anatomy)[[0, -1]]
    smoothed[:first], smoothed[last + 1 :] = smoothed[first], smoothed[last]  # no trend past the anatomy
    return smoothed, anatomy


def divide_gain(slab: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """A slab (slices, S-I rows, A-P cols) with its per-row gain divided out."""
    return slab / gain[None, :, None]


@dataclass(frozen=True)
class IntensityScaling:
    """Affine map between scanner units and the model's range, fixed per volume so it can be undone."""

    low: float
    high: float
    spec: IntensitySpec

    @classmethod
    def fit(cls, values: np.ndarray, spec: IntensitySpec) -> IntensityScaling:
        low, high = np.percentile(values, [spec.lower_percentile, spec.upper_percentile])
        if high <= low:  # e.g. mostly-empty volumes: fall back to the full range
            low, high = float(values.min()), float(values.max())
        if high <= low:
            raise InputError(
                f"the chosen slices are constant ({low:g} everywhere); choose slices that contain anatomy"
            )
        return cls(float(low), float(high), spec)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        unit = (values - self.low) / (self.high - self.low)
        scaled = self.spec.out_min + unit * (self.spec.out_max - self.spec.out_min)
        if self.spec.clip:
            scaled = np.clip(scaled, self.spec.out_min, self.spec.out_max)
        return scaled.astype(np.float32)

    def zero_level(self) -> float:
        """The model value of no signal (scanner 0), never clipped: the point a gain scales about."""
        unit = -self.low / (self.high - self.low)
        return float(self.spec.out_min + unit * (self.spec.out_max - self.spec.out_min))

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        unit = (values - self.spec.out_min) / (self.spec.out_max - self.spec.out_min)
        return (self.low + unit * (self.high - self.low)).astype(np.float32)
