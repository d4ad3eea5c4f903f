"""A PNG montage a person can look at: input, completion, and the completion with the known region outlined.

Regional scans fade towards the ends of their field of view (surface receive coils: a cervical scan's inferior edge
at about a third of its middle), and a completion continues at the brightness of the edge it meets. On one
window set on the whole scan both look nearly black below the seam, whatever anatomy they hold. The montage
therefore divides the slow superior-inferior fade out of the picture by default (`display_fade`): the input's on
its own rows, and on generated rows the completion's, but never more than the fade of the edge it meets and never
fast. A brightness step at the seam, or a completion that fades, stays visible; a long completion that comes back
from the faded edge to the scan's usual brightness is not magnified as though it were still in the fade. Only the
picture changes, never a written volume.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .geometry import MODEL_AXCODES, reorient
from .image_io import atomic_write
from .intensity import gain_of_level, row_level

OUTLINE_RGB = (255, 200, 0)
GENERATED_TINT = np.array([0.85, 0.92, 1.0])
DISPLAY_FADE_SIGMA_MM = 30.0  # the coil's fade is slow; anatomy (a vertebra, ~25 mm) is not divided out
# How far from the seam the gain of generated rows may have left the edge's for the scan's median row: a slow
# return is evened, a step at the seam (within a few millimetres) is not.
DISPLAY_RETURN_MM = 2 * DISPLAY_FADE_SIGMA_MM


def _to_uint8(plane: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((plane - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def _display_plane(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Middle sagittal plane as displayed in a viewer: superior up, anterior left; and its pixel spacing."""
    lia, lia_affine = reorient(array, affine, MODEL_AXCODES)
    spacing = np.linalg.norm(lia_affine[:3, :3], axis=0)
    plane = lia[lia.shape[0] // 2][:, ::-1]
    return plane, (float(spacing[1]), float(spacing[2]))


def display_fade(plane: np.ndarray, known: np.ndarray, row_mm: float) -> np.ndarray:
    """Per-row gain divided out of a displayed plane (rows superior to inferior); all ones without known anatomy.

    Known rows: the input's fade, measured on them alone. Generated rows on either side: the completion's own slow
    level there, fitted on those rows alone, over the input's median row; held between the nearest known edge's
    gain and 1, and leaving the edge's no faster than over `DISPLAY_RETURN_MM`. A completion that goes on at the
    edge's brightness is evened like the edge; one that comes back to the scan's usual brightness farther from
    the seam (300 mm below a cervical scan, whose edge sits at a third of its middle) is shown at that brightness,
    not three times over; a step at the seam, and a completion outside the range from the edge's brightness to
    the scan's middle, stay visible. Known rows are measured on their known pixels only (the reference's central
    strip: its columns).
    """
    rows = np.flatnonzero(known.any(axis=1))
    gain = np.ones(plane.shape[0], dtype=np.float32)
    if not rows.size:
        return gain
    first, last = rows[0], rows[-1]
    known_rows = np.where(known, plane, 0)[None, first : last + 1]
    measured, usual = gain_of_level(*row_level(known_rows, row_mm, DISPLAY_FADE_SIGMA_MM))
    if not usual > 0:
        return gain
    gain[first : last + 1] = measured
    # The rows above the scan and those below: their edge's gain and each row's distance from that edge.
    sides = (
        (slice(None, first), measured[0], np.arange(first, 0, -1)),
        (slice(last + 1, None), measured[-1], np.arange(1, plane.shape[0] - last)),
    )
    for beyond, edge, distance in sides:
        if not distance.size:
            continue
        level, _ = row_level(plane[None, beyond], row_mm, DISPLAY_FADE_SIGMA_MM)
        reach = edge + (1.0 - edge) * np.minimum(1.0, distance * row_mm / DISPLAY_RETURN_MM)
        gain[beyond] = np.clip(level / usual, np.minimum(edge, reach), np.maximum(edge, reach))
    return gain


def montage(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, height_px: int = 512, even_fade: bool = True
) -> Image.Image:
    """Three panels side by side, resized to square pixels; `even_fade`: the coil's fade divided out of the
    picture (module docstring)."""
    plane, (row_mm, col_mm) = _display_plane(image, affine)
    known, _ = _display_plane(mask.astype(np.float32), affine)
    known = known > 0.5
    if even_fade:
        plane = plane / display_fade(plane, known, row_mm)[:, None]
    low, high = np.percentile(plane[known] if known.any() else plane, [0.5, 99.5])
    gray = _to_uint8(plane, low, high)
    input_only = np.where(known, gray, 0).astype(np.uint8)
    overlay = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    overlay[~known] *= GENERATED_TINT
    edge = known ^ np.pad(known, 1, mode="edge")[2:, 1:-1] | known ^ np.pad(known, 1, mode="edge")[:-2, 1:-1]
    overlay[edge] = OUTLINE_RGB
    scale = height_px / (plane.shape[0] * row_mm)
    size = (max(1, int(round(plane.shape[1] * col_mm * scale))), height_px)
    panels = [
        Image.fromarray(input_only).convert("RGB").resize(size, Image.BILINEAR),
        Image.fromarray(gray).convert("RGB").resize(size, Image.BILINEAR),
        Image.fromarray(overlay.astype(np.uint8)).resize(size, Image.NEAREST),
    ]
    titles = ("input", "completion", "overlay (known region outlined)")
    if even_fade:
        titles = (titles[0] + " (coil fade evened for display)",) + titles[1:]
    sheet = Image.new("RGB", (size[0] * 3 + 20, height_px + 24), "black")
    draw = ImageDraw.Draw(sheet)
    for index, (panel, title) in enumerate(zip(panels, titles)):
        x = index * (size[0] + 10)
        sheet.paste(panel, (x, 24))
        draw.text((x + 4, 6), title, fill="white")
    return sheet


def write_preview(result, path: str | os.PathLike, even_fade: bool = True) -> Path:
    """Write the montage of a `CompletionResult` atomically."""
    image = montage(result.image, result.mask, result.affine, even_fade=even_fade)
    return atomic_write(path, lambda temporary: image.save(temporary, format="PNG"))
