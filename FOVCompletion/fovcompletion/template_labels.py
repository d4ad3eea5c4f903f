"""The PAM50 template's disc labels in this project's names.

The template's disc labels follow the Spinal Cord Toolbox: a disc carries the number of the vertebra below it
(3 = C2/C3 ... 19 = T11/T12; 2 marks the C1/C2 junction, which has no disc). There its level labels (the cord
labelled 1 = C1 ... 20 = L1) pass from one vertebra to the next, and its vertebrae mask has a gap: on the shared
PAM50, label 3 lies at the lower edge of the tall C2 body (with the dens) and label 2 inside it. This project
names a disc by the vertebra above it (2 = C2/C3 ... 19 = T12/L1, 20 = L1/L2), as the phantoms
(`anatomy.disc_label`) and the lumbar scans' labels do. T12/L1, which the template does not label, lies where
its level labels pass from T12 to L1; without them, and for L1/L2, one level below the two discs above.
"""

from __future__ import annotations

import numpy as np

T12, L1 = 19, 20  # the level labels' vertebrae
T12_L1, L1_L2 = 19, 20  # discs, by the vertebra above


def template_disc_rows(label_rows: dict[int, float], levels: np.ndarray | None = None) -> dict[int, float]:
    """Rows of the template's discs keyed by the vertebra above them, from the rows of its disc labels
    (label -> row) and, when given, its level labels (slices, rows, columns) for T12/L1."""
    rows = {label - 1: row for label, row in label_rows.items()}
    if T12_L1 not in rows and levels is not None:
        boundary = level_boundary(levels, T12, L1)
        if boundary is not None:
            rows[T12_L1] = boundary
    for disc in (T12_L1, L1_L2):
        if disc not in rows and disc - 1 in rows and disc - 2 in rows:
            rows[disc] = 2 * rows[disc - 1] - rows[disc - 2]
    return rows


def level_boundary(levels: np.ndarray, upper: int, lower: int) -> float | None:
    """The row (axis 1, superior to inferior) where level labels pass from `upper` to `lower`: the disc between
    the two vertebrae; None where either is missing."""
    upper_rows = np.flatnonzero((levels == upper).any(axis=(0, 2)))
    lower_rows = np.flatnonzero((levels == lower).any(axis=(0, 2)))
    if upper_rows.size == 0 or lower_rows.size == 0:
        return None
    return (float(upper_rows.max()) + float(lower_rows.min())) / 2
