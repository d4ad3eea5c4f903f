"""Per-volume intensity normalisation, as the bundle prescribes, and its inverse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import IntensitySpec
from .errors import InputError


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

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        unit = (values - self.spec.out_min) / (self.spec.out_max - self.spec.out_min)
        return (self.low + unit * (self.high - self.low)).astype(np.float32)
