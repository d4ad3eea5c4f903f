"""Anatomy check on phantoms and templates: vertebrae and discs found in the completed rows against the label
map's count (`vertebra_count_error`) and positions (`disc_f1`, and `disc_f1_near_seam` over the first
`NEAR_SEAM_MM` past a seam)."""

from __future__ import annotations

import numpy as np

from ..regions import hidden_blocks, row_distance_mm
from .cases import Case

DISC_TOLERANCE_MM = 5.0  # a detected disc within this distance of a true disc centre is a hit
# Where the visible spine fixes the next levels: on the phantoms a completion that knew everything the cervical
# spine tells would place the discs of the first 128 mm past the seam with F1 about 0.94, those of the whole
# hidden spine with 0.68 (docs/training.md, "What the visible spine says about the hidden levels").
NEAR_SEAM_MM = 128.0


def level_counts(
    case: Case, pred_mid: np.ndarray, slice_index: int, input_range: tuple[float, float] | None = None
) -> dict[str, float]:
    """Vertebrae and discs in the hidden rows of the mid-sagittal slice: found in the completion by the
    profile detector, and true from the label map (each hidden block counted on its own, then summed).

    The detector samples the completion along the truth's canal centreline, so it also scores where the
    completed spine runs: a completion whose spine takes another path (10-20 mm off on the phantoms) loses levels
    it does draw. The count along the completion's own canal (tracked as for canal continuity) is kept beside it,
    as `vertebra_count_error_along_own_canal`: what a reader counting the completed image would find.

    The completion is read within `input_range` (the range of what the method was given), as a display of the
    input shows it: the detector needs the background at 0, and a baseline's values below the input's minimum
    (counted by `value_range_violations`) would move the background below 0."""
    from ..anatomy import count_levels, count_levels_in_labels
    from .appearance import canal_columns

    if input_range is not None:
        pred_mid = np.clip(pred_mid, *input_range)
    spacing = (float(case.spacing[1]), float(case.spacing[2]))
    own_canal = canal_columns(np.asarray(pred_mid, dtype=np.float64), spacing)
    keys = ("found", "true", "detected_in_truth", "found_along_own_canal")
    counts = {f"{kind}_{key}": 0.0 for kind in ("vertebrae", "discs") for key in keys}
    disc_rows: dict[str, list[float]] = {key: [] for key in keys}
    for rows in hidden_blocks(case.known_rows):
        answers = {
            "found": count_levels(pred_mid, spacing, case.centerline_cols, rows),
            "true": count_levels_in_labels(case.labels[slice_index], rows),
            # the detector on the true image: its own error, to tell apart from the completion's
            "detected_in_truth": count_levels(case.truth[slice_index], spacing, case.centerline_cols, rows),
            "found_along_own_canal": count_levels(pred_mid, spacing, own_canal, rows),
        }
        for key, answer in answers.items():
            disc_rows[key] += [float(r) for r in answer["disc_rows"]]
            for kind in ("vertebrae", "discs"):
                counts[f"{kind}_{key}"] += float(answer[kind])
    counts["vertebrae_abs_err"] = abs(counts["vertebrae_found"] - counts["vertebrae_true"])
    counts["discs_abs_err"] = abs(counts["discs_found"] - counts["discs_true"])
    counts["vertebra_count_error_along_own_canal"] = abs(
        counts["vertebrae_found_along_own_canal"] - counts["vertebrae_true"]
    )
    # Counts alone forgive discs in the wrong place (noise has peaks too): also match positions.
    tolerance_rows = DISC_TOLERANCE_MM / spacing[0]
    counts["disc_position_f1"] = position_f1(disc_rows["found"], disc_rows["true"], tolerance_rows)
    counts["disc_position_f1_detected_in_truth"] = position_f1(
        disc_rows["detected_in_truth"], disc_rows["true"], tolerance_rows
    )
    distance = row_distance_mm(case.known_rows, spacing[0])

    def near_seam(rows: list[float]) -> list[float]:
        return [row for row in rows if distance[min(int(round(row)), len(distance) - 1)] <= NEAR_SEAM_MM]

    counts["disc_f1_near_seam"] = position_f1(
        near_seam(disc_rows["found"]), near_seam(disc_rows["true"]), tolerance_rows
    )
    counts["disc_f1_near_seam_detected_in_truth"] = position_f1(
        near_seam(disc_rows["detected_in_truth"]), near_seam(disc_rows["true"]), tolerance_rows
    )
    counts["vertebra_count_error"] = counts["vertebrae_abs_err"]  # the names the reports use
    counts["disc_f1"] = counts["disc_position_f1"]
    return counts


def position_f1(found: list[float], true: list[float], tolerance: float) -> float:
    """F1 of detected against true positions, each true one matched at most once within `tolerance`."""
    if not found and not true:
        return 1.0
    if not found or not true:
        return 0.0
    pairs = sorted(
        (abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(true) if abs(f - t) <= tolerance
    )
    used_found, used_true = set(), set()
    for _, i, j in pairs:
        if i not in used_found and j not in used_true:
            used_found.add(i)
            used_true.add(j)
    matched = len(used_true)
    precision, recall = matched / len(found), matched / len(true)
    return 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)
