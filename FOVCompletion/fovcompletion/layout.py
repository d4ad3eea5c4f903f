"""Where the scan sits on the model's canvas, and which windows complete a taller field of view.

Rows are counted on the model grid with row 0 at the scan's first (most superior) row. The requested
output spans rows [-above, n_rows + below). When that is taller than the canvas, windows move outwards
from the scan, each keeping `context` known rows (progressive outpainting), so any extent a body has
(`MAX_TOTAL_EXTENSION_MM`) works with any canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arguments import MAX_TOTAL_EXTENSION_MM, is_finite_number
from .bundle import BundleMetadata
from .errors import InputError

# The reference cut each scan to its central 192 mm from back to front before anything else (MONAI's
# CenterSpatialCropd): its intensity scaling saw that strip alone, and only that strip was known on its canvas.
REFERENCE_STRIP_MM = 192.0


def check_extension(extend_superior_mm: float, extend_inferior_mm: float) -> None:
    """Refuse extensions no body has before any work starts: negative, not finite, none, or too tall."""
    extensions = (extend_superior_mm, extend_inferior_mm)
    if not all(is_finite_number(mm) for mm in extensions):
        raise InputError(
            f"extensions must be finite millimetres (got {extend_superior_mm!r}, {extend_inferior_mm!r})"
        )
    if extend_superior_mm < 0 or extend_inferior_mm < 0:
        raise InputError("extensions must be zero or positive millimetres")
    if extend_superior_mm == 0 and extend_inferior_mm == 0:
        raise InputError("nothing to complete: extend superiorly and/or inferiorly by more than 0 mm")
    total = extend_superior_mm + extend_inferior_mm
    if total > MAX_TOTAL_EXTENSION_MM:
        raise InputError(
            f"extending by {total:g} mm is more than any body needs: at most {MAX_TOTAL_EXTENSION_MM:g} mm "
            "in total (superior + inferior; a whole spine is under 1 m)"
        )


def reference_strip(n_cols: int, spacing_ap_mm: float) -> tuple[int, int]:
    """Columns [start, stop) of the reference's central strip, as MONAI's centre crop takes it (from
    n // 2 - width // 2); the whole scan when it is no wider."""
    width = int(round(REFERENCE_STRIP_MM / spacing_ap_mm))
    if n_cols <= width:
        return 0, n_cols
    start = n_cols // 2 - width // 2
    return start, start + width


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class CanvasLayout:
    """The mosaic (all rows the sampler will touch) and the windows that fill it, in model-grid units."""

    n_rows: int  # scan rows on the model grid
    n_cols: int  # scan columns on the model grid
    above: int  # requested rows above the scan
    below: int  # requested rows below the scan
    top: int  # first mosaic row (<= -above)
    height: int  # mosaic height (>= window height)
    width: int  # mosaic/canvas width
    col_offset: int  # mosaic column of the scan's column 0 (negative when the canvas crops the scan)
    window_height: int
    window_starts: tuple[int, ...]  # first row of each window, in scan rows, in processing order
    context: int = 0  # rows each later window takes from those already filled (0: the reference's one canvas)
    known_cols: tuple[int, int] | None = None  # the scan's columns put on the canvas (None: all of them)

    @property
    def windows(self) -> int:
        return len(self.window_starts)


def plan_windows(top: int, bottom: int, known: tuple[int, int], height: int, context: int) -> list[int]:
    """Greedy window starts covering [top, bottom): first downwards from the known rows, then upwards."""
    if bottom - top <= height:
        return [top]
    starts = []
    known_top, known_bottom = known
    while known_bottom < bottom:
        start = max(top, min(known_bottom - context, bottom - height))
        starts.append(start)
        known_bottom = start + height
        known_top = min(known_top, start)
    while known_top > top:
        # Never past the bottom either: a scan shorter than the context leaves the first window short of it.
        start = max(top, min(known_top + context - height, bottom - height))
        starts.append(start)
        known_top = start
    return starts


def crossfade_rows(layout: CanvasLayout, overlap_mm: float, spacing_si_mm: float) -> int:
    """Rows of the windows before it that each later window makes again and cross-fades into them: at most half
    of its context, whose rest conditions it."""
    return min(int(round(overlap_mm / spacing_si_mm)), layout.context // 2)


def plan_layout(
    metadata: BundleMetadata,
    n_rows: int,
    n_cols: int,
    extend_superior_mm: float,
    extend_inferior_mm: float,
    reference_placement: bool = False,
) -> CanvasLayout:
    """Lay out the scan and the requested extension on the model's canvas."""
    check_extension(extend_superior_mm, extend_inferior_mm)
    spacing_si = metadata.canvas.spacing_mm[0]
    above = int(math.ceil(extend_superior_mm / spacing_si))
    below = int(math.ceil(extend_inferior_mm / spacing_si))
    canvas_h, canvas_w = metadata.canvas.shape
    multiple = metadata.size_multiple
    fixed = reference_placement or metadata.canvas.ap_policy == "fixed"
    width = canvas_w if fixed else max(multiple, round_up(n_cols, multiple))
    col_offset = (width - n_cols) // 2
    requested = n_rows + above + below
    if reference_placement:
        # The reference centres the scan's central strip on its single canvas, padding (canvas - n) // 2 before
        # it; we shift only as far as the request needs.
        if requested > canvas_h:
            raise InputError(
                f"the reference sampler has one canvas of {canvas_h * spacing_si:.0f} mm; the scan plus the "
                f"extension need {requested * spacing_si:.0f} mm"
            )
        top = min(max(-((canvas_h - n_rows) // 2), n_rows + below - canvas_h), -above)
        known_cols = reference_strip(n_cols, metadata.canvas.spacing_mm[1])
        col_offset = (width - (known_cols[1] - known_cols[0])) // 2 - known_cols[0]
        return CanvasLayout(
            n_rows, n_cols, above, below, top, canvas_h, width, col_offset, canvas_h, (top,), 0, known_cols
        )
    window_height = canvas_h if fixed else min(canvas_h, round_up(requested, multiple))
    height = max(requested, window_height)
    # Spare rows (window taller than requested) go to the unknown ends, split evenly.
    spare = height - requested
    top = -above - (spare // 2 if above and below else (spare if above else 0))
    context = int(round(metadata.canvas.context_fraction * window_height)) // multiple * multiple
    context = min(max(multiple, context), window_height - multiple)  # each window must advance
    starts = plan_windows(top, top + height, (0, n_rows), window_height, context)
    return CanvasLayout(
        n_rows, n_cols, above, below, top, height, width, col_offset, window_height, tuple(starts), context
    )
