"""Anatomy check on phantoms: vertebrae and discs found in the completed rows against the label map's count."""

from __future__ import annotations

from typing import Any

import numpy as np

from .cases import Case


def _as_counts(value: Any) -> dict[str, float]:
    """Accept the detector's answer as a dict, a (vertebrae, discs) pair or an object with those attributes."""
    if isinstance(value, dict):
        return {"vertebrae": float(value["vertebrae"]), "discs": float(value["discs"])}
    if isinstance(value, tuple | list):
        return {"vertebrae": float(value[0]), "discs": float(value[1])}
    return {"vertebrae": float(value.vertebrae), "discs": float(value.discs)}


def level_counts(case: Case, pred_mid: np.ndarray, slice_index: int) -> dict[str, float]:
    """Counts in the hidden rows of the mid-sagittal slice: found in the completion, and true (from labels)."""
    from ..anatomy import count_levels, count_levels_in_labels

    rows = np.flatnonzero(~case.known_rows)
    spacing = (float(case.spacing[1]), float(case.spacing[2]))
    found = _as_counts(count_levels(pred_mid, spacing, case.centerline_cols, rows))
    truth = _as_counts(count_levels_in_labels(case.labels[slice_index], rows))
    return {
        "vertebrae_found": found["vertebrae"],
        "vertebrae_true": truth["vertebrae"],
        "discs_found": found["discs"],
        "discs_true": truth["discs"],
        "vertebrae_abs_err": abs(found["vertebrae"] - truth["vertebrae"]),
        "discs_abs_err": abs(found["discs"] - truth["discs"]),
    }
