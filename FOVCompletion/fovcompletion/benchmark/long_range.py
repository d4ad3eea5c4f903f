"""Long completions: how far a bright canal lasts when a whole cervical scan is completed far below its field of view.

Canal continuity scores only the hidden 64 mm of a case, along the truth's canal; what a reader of a cervical scan
completed 300 mm down sees first is whether the canal lasts at all. No truth reaches that far, so the measure is
the completion's own `canal_reach_mm` on its mid-sagittal slice, read on two scales: the whole scan's visible range,
and the range of the scan's last `LAST_MM` (a regional scan's receive coil fades towards its edge, so on the whole
scan's range a canal as bright as the rows it continues can count as dark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..canal import canal_reach_mm
from ..errors import InputError
from ..image_io import Volume
from ..pipeline import complete
from ..regions import scale_unit, visible_range
from .cases import Case

LAST_MM = 64.0  # the scan's last rows whose range the second reach is read on: the hidden length of a case
# Completed downwards: the region whose users extend it most (the demo, #18's previews).
LONG_REGION = "cervical"


def last_rows(known_rows: np.ndarray, spacing_si_mm: float, length_mm: float = LAST_MM) -> np.ndarray:
    """The known rows within `length_mm` of the last known one (the scan's rows come first, the extension below)."""
    known_rows = np.asarray(known_rows, dtype=bool)
    rows = np.arange(known_rows.size)
    last_known = int(np.flatnonzero(known_rows)[-1])
    return known_rows & (rows > last_known - round(length_mm / spacing_si_mm))


def long_reach_mm(
    image: np.ndarray, known_rows: np.ndarray, spacing: tuple[float, float]
) -> tuple[float, float]:
    """Canal reach below the scan (mm) on the mid-slice of `image` (slices, S-I rows, A-P cols; `spacing` S-I, A-P),
    scaled by the whole scan's visible range and by that of its last `LAST_MM` of known rows."""
    known_rows = np.asarray(known_rows, dtype=bool)
    mid = np.asarray(image)[image.shape[0] // 2]
    reaches = []
    for scale_rows in (known_rows, last_rows(known_rows, spacing[0])):
        low, high = visible_range(image, scale_rows)
        reaches.append(float(sum(canal_reach_mm(scale_unit(mid, low, high), known_rows, spacing))))
    return reaches[0], reaches[1]


def long_cases(cases: Iterable[Case]) -> list[Case]:
    """One case per real cervical subject (its whole scan is what is completed, whichever end a case hides)."""
    chosen: dict[str, Case] = {}
    for case in cases:
        if case.source == "real" and case.region == LONG_REGION:
            chosen.setdefault(case.subject, case)
    return list(chosen.values())


def long_completions(
    cases: list[Case],
    bundle: Bundle,
    *,
    below_mm: float,
    draws: int,
    first_seed: int,
    slices: int,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each chosen case's whole scan completed `below_mm` below it, `draws` times (seeds `first_seed` + k), at the
    model's default setting (what `complete` and a preview draw), and the canal reach of every draw; the summary is
    the mean over all draws."""
    if not cases:
        raise InputError(f"no real {LONG_REGION} scan among the cases to complete below")
    seeds = [first_seed + draw for draw in range(draws)]
    per_case = []
    for case in cases:
        whole = Volume(case.truth, case.affine)
        spacing = (float(case.spacing[1]), float(case.spacing[2]))
        reaches = []
        for seed in seeds:
            result = complete(
                whole,
                model=bundle,
                slices=min(slices, case.truth.shape[0]),
                extend_inferior_mm=below_mm,
                seed=seed,
                device=device,
            )
            known_rows = result.mask.any(axis=(0, 2))
            reaches.append(long_reach_mm(result.image, known_rows, spacing))
            log(
                f"  {case.subject} {below_mm:g} mm below, seed {seed}: canal reach {reaches[-1][0]:.0f} mm "
                f"(on the last {LAST_MM:g} mm's range {reaches[-1][1]:.0f} mm)"
            )
        per_case.append(
            {
                "case": case.subject,
                "seeds": seeds,
                "reach_mm": [whole_range for whole_range, _ in reaches],
                "reach_last_mm": [last_range for _, last_range in reaches],
            }
        )
    return {
        "below_mm": below_mm,
        "last_mm": LAST_MM,
        "draws": draws,
        "cases": per_case,
        "mean_reach_mm": float(np.mean([value for row in per_case for value in row["reach_mm"]])),
        "mean_reach_last_mm": float(np.mean([value for row in per_case for value in row["reach_last_mm"]])),
    }
