"""Template cases: a real-MRI whole-cord template (PAM50) with its cervical spine kept and the rest completed.

The PAM50 T2w template (`../shared/data/spine-t2w-templates`, read its README) is the only real-MRI source here
that spans the thoracic spine, so it gives level counts on more than phantoms. The case keeps everything down
to the C7/T1 disc (the skull base and C1-C7, as a cervical scan shows them) and hides the rest down to L1 (a
little above the L1/L2 disc). Levels are scored on the hidden rows from the template's disc labels, read in this
project's names by `template_labels` (their own convention names a disc by the vertebra below it; until
2026-12-05 they were read one level off, so the case named C1-C7 kept C1-C6 and ended in T12). Vertebral
bodies are the rows between consecutive discs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..anatomy import DISC_LABEL_OFFSET, DISC_LABELS, VERTEBRA_LABELS
from ..errors import InputError
from ..geometry import MODEL_AXCODES, reorient
from ..image_io import read_volume
from ..template_labels import T12_L1, template_discs
from .cases import Case, bids_subjects, to_model_orientation

KEPT_DISC = 7  # C7/T1 (discs by the vertebra above them): the last disc a cervical scan shows
LAST_DISC = T12_L1
L1_FRACTION = 0.8  # how much of L1 (in units of T12's height) the case goes on below the T12/L1 disc


def label_file(root: Path, subject: str, kind: str) -> Path | None:
    """derivatives/labels/<subject>/anat/<subject>*_label-<kind>.nii[.gz], if there is one."""
    folder = root / "derivatives" / "labels" / subject / "anat"
    found = sorted(folder.glob(f"{subject}*label-{kind}.nii*")) if folder.is_dir() else []
    return found[0] if found else None


def labels_on_grid(path: Path, image_affine: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A label volume in the model orientation; it must lie on the image's own voxel grid."""
    labels = read_volume(path)
    if labels.array.shape != tuple(image_shape) or not np.allclose(labels.affine, image_affine, atol=1e-3):
        raise InputError(f"{path.name} is not on the grid of its image (shape or affine differ)")
    return reorient(np.rint(labels.array).astype(np.int16), labels.affine, MODEL_AXCODES)[0]


def level_labels(
    shape: tuple[int, int, int], discs: dict[int, tuple[float, float]], bottom: int
) -> np.ndarray:
    """A label map in the phantom's convention (`anatomy`): disc d (below vertebra d) as 100 + d on its row,
    vertebra v on the rows between discs v - 1 and v, in the discs' column of every slice; L1 runs from the
    T12/L1 disc to `bottom`."""
    labels = np.zeros(shape, dtype=np.int16)
    ordered = sorted(discs)
    for value in ordered:
        row, col = discs[value]
        labels[:, int(round(row)), int(round(col))] = DISC_LABEL_OFFSET + value
    for index in range(len(ordered) - 1):
        upper, lower = ordered[index], ordered[index + 1]
        if lower != upper + 1:
            continue
        (top, col), (end, _) = discs[upper], discs[lower]
        labels[:, int(round(top)) + 1 : int(round(end)), int(round(col))] = lower
    last_row, last_col = discs[ordered[-1]]
    labels[:, int(round(last_row)) + 1 : bottom + 1, int(round(last_col))] = ordered[-1] + 1
    return labels


def cord_columns(cord: np.ndarray | None, discs: dict[int, tuple[float, float]], n_rows: int) -> np.ndarray:
    """Canal centre column per row of the mid-sagittal slice: the cord mask's centre where it has one, else
    the disc labels' columns (which the template puts on the cord), interpolated between rows and continued
    past the end discs along the line through the last two."""
    rows = np.arange(n_rows, dtype=np.float64)
    if cord is not None and cord[cord.shape[0] // 2].any():
        plane = cord[cord.shape[0] // 2] > 0
        has = plane.any(axis=1)
        centres = np.array([np.flatnonzero(line).mean() for line in plane[has]])
        return np.interp(rows, rows[has], centres)
    points = np.array(sorted(discs.values()))
    columns = np.interp(rows, points[:, 0], points[:, 1])
    if len(points) >= 2:
        for (r0, c0), (r1, c1), beyond in (
            (points[0], points[1], rows < points[0, 0]),
            (points[-2], points[-1], rows > points[-1, 0]),
        ):
            columns[beyond] = c1 + (rows[beyond] - r1) * (c1 - c0) / max(r1 - r0, 1e-6)
    return columns


def template_case(
    subject: str,
    volume,
    discs_volume: np.ndarray,
    cord: np.ndarray | None,
    region: str = "whole-spine",
    levels: np.ndarray | None = None,
) -> Case:
    """The cervical-kept case of one template volume (model orientation), its disc labels and, if it has them,
    its level labels."""
    discs = template_discs(discs_volume, levels)
    for needed in (KEPT_DISC, LAST_DISC, LAST_DISC - 1):
        if needed not in discs:
            raise InputError(f"{subject}: the disc labels lack {DISC_LABELS[DISC_LABEL_OFFSET + needed]}")
    kept_row = int(round(discs[KEPT_DISC][0]))
    last_row = discs[LAST_DISC][0]
    t12_height = last_row - discs[LAST_DISC - 1][0]
    bottom = min(volume.array.shape[1] - 1, int(round(last_row + L1_FRACTION * t12_height)))
    truth = volume.array[:, : bottom + 1]
    known = np.zeros(truth.shape[1], dtype=bool)
    known[: kept_row + 1] = True
    scored = {value: position for value, position in discs.items() if position[0] <= bottom}
    labels = level_labels(truth.shape, scored, bottom)
    centre = cord_columns(None if cord is None else cord[:, : bottom + 1], scored, truth.shape[1])
    names = {**{k: v for k, v in VERTEBRA_LABELS.items()}, **DISC_LABELS}
    return Case(
        f"{subject}/cervical",  # as the phantoms' cases; "C1-C7" until 2026-12-05, which kept C1-C6
        subject,
        "template",
        region,
        np.ascontiguousarray(truth),
        volume.affine,
        known,
        labels,
        centre,
        names,
    )


def template_cases(root: str | Path, log: Callable[[str], None] = print) -> list[Case]:
    """One case per subject of a template root that has disc labels (`derivatives/labels/...discs_dseg`)."""
    root = Path(root)
    cases = []
    for subject, (path, _) in bids_subjects(root).items():
        discs_path = label_file(root, subject, "discs_dseg")
        if discs_path is None:
            log(f"skipping template {subject}: no label-discs_dseg file under derivatives/labels")
            continue
        original = read_volume(path)
        shape = original.array.shape
        discs = labels_on_grid(discs_path, original.affine, shape)
        cord_path = label_file(root, subject, "SC_seg")
        cord = labels_on_grid(cord_path, original.affine, shape) if cord_path else None
        levels_path = label_file(root, subject, "levels_dseg")
        levels = labels_on_grid(levels_path, original.affine, shape) if levels_path else None
        cases.append(template_case(subject, to_model_orientation(original), discs, cord, levels=levels))
    if not cases:
        raise InputError(
            f"no template with disc labels under {root} (derivatives/labels/sub-*/anat/*discs_dseg*)"
        )
    return cases
