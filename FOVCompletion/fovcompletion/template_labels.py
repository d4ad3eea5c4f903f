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


def template_discs(discs: np.ndarray, levels: np.ndarray | None = None) -> dict[int, tuple[float, float]]:
    """(row, column) of each of the template's discs, keyed by the vertebra above it, from its disc labels and,
    when given, its level labels (both slices x rows x columns, rows superior to inferior): a labelled disc at its
    voxels' mean; T12/L1 where the level labels pass from T12 to L1, in the column of the canal they label; a
    disc the labels do not give one level below the two above it, in their line."""
    positions = {}
    for label in np.unique(discs[discs > 0]):
        _, rows, cols = np.nonzero(discs == label)
        # named by the vertebra below it there, by the one above it here
        positions[int(label) - 1] = (float(rows.mean()), float(cols.mean()))
    if T12_L1 not in positions and levels is not None:
        row = level_boundary(levels, T12, L1)
        beside = None if row is None else np.nonzero(levels[:, int(row) - 1 : int(row) + 3] > 0)[2]
        if beside is not None and beside.size:
            positions[T12_L1] = (row, float(beside.mean()))
    for disc in (T12_L1, L1_L2):
        if disc not in positions and disc - 1 in positions and disc - 2 in positions:
            (r0, c0), (r1, c1) = positions[disc - 2], positions[disc - 1]
            positions[disc] = (2 * r1 - r0, 2 * c1 - c0)
    return positions


def level_boundary(levels: np.ndarray, upper: int, lower: int) -> float | None:
    """The row (axis 1, superior to inferior) where level labels pass from `upper` to `lower`: the disc between
    the two vertebrae; None where either is missing."""
    upper_rows = np.flatnonzero((levels == upper).any(axis=(0, 2)))
    lower_rows = np.flatnonzero((levels == lower).any(axis=(0, 2)))
    if upper_rows.size == 0 or lower_rows.size == 0:
        return None
    return (float(upper_rows.max()) + float(lower_rows.min())) / 2
