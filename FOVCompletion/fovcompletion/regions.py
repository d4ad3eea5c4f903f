"""The known and hidden rows of a completed image and the intensity scale its known rows set.

Shared by the engine (choosing among candidate completions, `candidates`) and the benchmark (every metric), so that
both read a completion on the same scale. Arrays are (slices, S-I rows, A-P cols); `known_rows` marks the rows
that came from the scan.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def visible_range(image: np.ndarray, known_rows: np.ndarray) -> tuple[float, float]:
    """0.5 and 99.5 percentiles of the known rows: the scale every completion is read on."""
    low, high = np.percentile(image[:, known_rows], [0.5, 99.5])
    if high <= low:
        low, high = float(image[:, known_rows].min()), float(image[:, known_rows].max())
    return float(low), float(max(high, low + 1e-6))


def scale_unit(image: np.ndarray, low: float, high: float, clip: bool = True) -> np.ndarray:
    """`image` mapped so that `low` -> 0 and `high` -> 1 (clipped to [0, 1] unless told otherwise)."""
    scaled = (np.asarray(image, dtype=np.float64) - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0) if clip else scaled


def row_distance_mm(known_rows: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Distance of each row from the nearest known row in mm (0 on known rows, spacing on the first hidden one)."""
    known_rows = np.asarray(known_rows, dtype=bool)
    if not known_rows.any():
        return np.full(known_rows.shape, np.inf)
    return ndimage.distance_transform_edt(~known_rows) * float(spacing_mm)


def hidden_blocks(known_rows: np.ndarray) -> list[slice]:
    """Contiguous runs of hidden rows (above and/or below the visible part)."""
    hidden = ~np.asarray(known_rows, dtype=bool)
    edges = np.flatnonzero(np.diff(np.r_[0, hidden.astype(int), 0]))
    return [slice(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
