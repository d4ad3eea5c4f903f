"""Long completions: how far a bright canal lasts when a whole cervical scan is completed far below its field of view.

Canal continuity scores only the hidden 64 mm of a case, along the truth's canal; what a reader of a cervical scan
completed 300 mm down sees first is whether the canal lasts at all. No truth reaches that far, so the measure is
the completion's own `canal_reach_mm` on its mid-sagittal slice, read on two scales: the whole scan's visible range,
and the range of the scan's last `LAST_MM` (a regional scan's receive coil fades towards its edge, so on the whole
scan's range a canal as bright as the rows it continues can count as dark). Beyond one canvas window the engine
completes window after window, each conditioned on the one before it; where a later window takes over, a person sees
any change in brightness as a line across the body, so the brightness on either side of every window join is read
too (`join_brightness`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..bundle import Bundle, BundleMetadata
from ..canal import canal_reach_mm
from ..errors import InputError
from ..image_io import Volume
from ..layout import crossfade_rows, plan_layout
from ..pipeline import DEFAULT_WINDOW_OVERLAP_MM, complete, native_grid
from ..preprocess import prepare_slab
from ..regions import scale_unit, visible_range
from .aggregate import finite_mean
from .appearance import SEAM_BAND_MM
from .brightness_steps import farthest_from_one
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


def window_joins(
    volume: Volume, metadata: BundleMetadata, below_mm: float, slices: int, overlap_mm: float
) -> list[tuple[int, int]]:
    """Where the windows of a completion `below_mm` below the scan meet, as rows of its output (the scan's rows
    first), with the engine's own map from its canvas to the output (`pipeline.native_grid`): per later window, the
    first row it makes again and cross-fades into the earlier one's (`overlap_mm`, as `complete` takes it) and the
    first row it makes alone."""
    slab = prepare_slab(volume, metadata, slices)
    layout = plan_layout(metadata, slab.model.shape[1], slab.model.shape[2], 0.0, below_mm)
    _, _, mosaic_rows, _ = native_grid(slab, layout, (0.0, below_mm))
    made_again = crossfade_rows(layout, overlap_mm, metadata.canvas.spacing_mm[0])

    def first_row_below(edge: float) -> int:
        """The first output row at or below a canvas row edge (canvas rows counted from the scan's first)."""
        return int(np.searchsorted(mosaic_rows, edge - layout.top))

    # The windows move down from the scan: each later one's own rows begin where the one before it ended, at the
    # edge between canvas rows end - 1 and end, and it makes again the `made_again` rows above that edge.
    ends = [start + layout.window_height for start in layout.window_starts[:-1]]
    joins = [(first_row_below(end - made_again - 0.5), first_row_below(end - 0.5)) for end in ends]
    return [(again, own) for again, own in joins if own < len(mosaic_rows)]


def join_brightness(image: np.ndarray, joins: list[tuple[int, int]], band_rows: int) -> list[float]:
    """Per window join (`window_joins`), the mean of the later window's first `band_rows` own rows over that of the
    `band_rows` rows above those it made again (the earlier window's own): 1 = no step where one window takes over
    from the other. Over every slice and column of `image` (slices, S-I rows, A-P cols): a change in the tissue in
    front of the spine is as visible as one in the canal. NaN where a band falls outside the image."""
    image = np.asarray(image, dtype=np.float64)
    ratios = []
    for again, own in joins:
        above, below = image[:, max(again - band_rows, 0) : again], image[:, own : own + band_rows]
        usable = again >= band_rows and below.shape[1] == band_rows and above.mean() > 0
        ratios.append(float(below.mean() / above.mean()) if usable else math.nan)
    return ratios


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
    model's default setting (what `complete` and a preview draw), and the canal reach of every draw and the
    brightness at each of its window joins; the summary is the mean over all draws (and the largest join step)."""
    if not cases:
        raise InputError(f"no real {LONG_REGION} scan among the cases to complete below")
    seeds = [first_seed + draw for draw in range(draws)]
    per_case = []
    for case in cases:
        whole = Volume(case.truth, case.affine)
        spacing = (float(case.spacing[1]), float(case.spacing[2]))
        chosen = min(slices, case.truth.shape[0])
        joins = window_joins(whole, bundle.metadata, below_mm, chosen, DEFAULT_WINDOW_OVERLAP_MM)
        band_rows = max(1, round(SEAM_BAND_MM / spacing[0]))
        reaches, steps = [], []
        for seed in seeds:
            result = complete(
                whole,
                model=bundle,
                slices=chosen,
                window_overlap_mm=DEFAULT_WINDOW_OVERLAP_MM,
                extend_inferior_mm=below_mm,
                seed=seed,
                device=device,
            )
            known_rows = result.mask.any(axis=(0, 2))
            reaches.append(long_reach_mm(result.image, known_rows, spacing))
            steps.append(join_brightness(result.image, joins, band_rows))
            log(
                f"  {case.subject} {below_mm:g} mm below, seed {seed}: canal reach {reaches[-1][0]:.0f} mm "
                f"(on the last {LAST_MM:g} mm's range {reaches[-1][1]:.0f} mm), brightness at the window joins "
                + (", ".join(f"{ratio:.2f}" for ratio in steps[-1]) or "none (one window)")
            )
        per_case.append(
            {
                "case": case.subject,
                "seeds": seeds,
                "reach_mm": [whole_range for whole_range, _ in reaches],
                "reach_last_mm": [last_range for _, last_range in reaches],
                "join_rows": [own for _, own in joins],
                "join_brightness": steps,
                "largest_join_step": [farthest_from_one(draw) for draw in steps],
            }
        )
    ratios = [ratio for row in per_case for draw in row["join_brightness"] for ratio in draw]
    return {
        "below_mm": below_mm,
        "last_mm": LAST_MM,
        "draws": draws,
        "cases": per_case,
        "mean_reach_mm": float(np.mean([value for row in per_case for value in row["reach_mm"]])),
        "mean_reach_last_mm": float(np.mean([value for row in per_case for value in row["reach_last_mm"]])),
        "join_band_mm": SEAM_BAND_MM,
        "mean_join_brightness": finite_mean(ratios),
        "largest_join_step_of_all": farthest_from_one(ratios),
    }
