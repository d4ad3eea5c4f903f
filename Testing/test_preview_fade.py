"""The preview montage divides the coil fade out of the picture, and only out of the picture: the input's on its
rows, the completion's on generated rows within the edge's fade."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fovcompletion.preview import display_fade, montage

# LIA voxel axes (the model's): left, inferior, anterior; 1 mm voxels
LIA_AFFINE = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
ROWS, KNOWN_ROWS, COLS = 240, 120, 60  # 120 mm generated: beyond the display's return distance (60 mm)
MEDIAN_ROW = 0.65  # the faded scan's median row, relative to its top (a linear fade from 1 to 0.3)


def faded_scan(completion_level: float) -> tuple[np.ndarray, np.ndarray]:
    """A bright canal and dimmer tissue, fading linearly to 0.3 of the top at the known region's last row; the
    generated rows below continue at `completion_level` times that edge's brightness."""
    fade = np.ones(ROWS)
    fade[:KNOWN_ROWS] = np.linspace(1.0, 0.3, KNOWN_ROWS)
    fade[KNOWN_ROWS:] = 0.3 * completion_level
    row = np.full(COLS, 200.0)
    row[:10] = 0.0  # air in front: the window's black, so that the tissue is a mid grey
    row[28:33] = 1000.0  # the canal
    image = np.repeat((fade[:, None] * row[None])[None], 3, axis=0)
    known = np.zeros(image.shape, dtype=bool)
    known[:, :KNOWN_ROWS] = True
    return image, known


def completion_pixels(sheet: Image.Image) -> np.ndarray:
    """The completion panel's grey values (the middle of the montage's three panels, below the titles)."""
    panel_width = (sheet.size[0] - 20) // 3
    return np.asarray(sheet.convert("L"), dtype=np.float64)[24:, panel_width + 10 : 2 * panel_width + 10]


def completion_panel(sheet: Image.Image, known_rows_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The completion panel's grey values, split into the known rows' top quarter and the generated rows."""
    pixels = completion_pixels(sheet)
    seam = int(pixels.shape[0] * known_rows_fraction)
    return pixels[: seam // 4], pixels[seam + 5 :]


def completion_rows(sheet: Image.Image, first_mm: float, last_mm: float) -> np.ndarray:
    """The completion panel's grey values over the plane's rows (1 mm each) from `first_mm` to `last_mm`."""
    pixels = completion_pixels(sheet)
    per_mm = pixels.shape[0] / ROWS
    return pixels[int(first_mm * per_mm) : int(last_mm * per_mm)]


def canal_brightness(pixels: np.ndarray) -> float:
    return float(np.percentile(pixels, 99))


def tissue_brightness(pixels: np.ndarray) -> float:
    return float(np.median(pixels))


def test_display_fade_follows_the_known_rows_and_evens_a_completion_at_the_edge_like_the_edge():
    image, known = faded_scan(completion_level=1.0)
    gain = display_fade(image[1], known[1], row_mm=1.0)
    edge = gain[KNOWN_ROWS - 1]
    assert gain[:KNOWN_ROWS].max() / edge > 2.5  # the fade, top to edge (1 -> 0.3)
    np.testing.assert_allclose(gain[KNOWN_ROWS:], edge, rtol=0.1)  # generated rows at the edge's brightness
    nothing_known = np.zeros_like(known[1])
    assert np.all(display_fade(image[1], nothing_known, row_mm=1.0) == 1)  # the picture unchanged


def test_evened_preview_shows_a_completion_back_at_the_scans_brightness_as_bright_as_the_scan_top():
    # 300 mm below a cervical scan the completion comes back from the faded edge (0.3) to the scan's usual
    # brightness (its median row, 0.65): shown as bright as the evened scan, not magnified by the edge's fade
    # (1 / 0.3) into a burnt-out block.
    image, known = faded_scan(completion_level=MEDIAN_ROW / 0.3)
    sheet = montage(image, known, LIA_AFFINE)
    top, far = completion_rows(sheet, 0, 30), completion_rows(sheet, KNOWN_ROWS + 70, ROWS)
    assert abs(tissue_brightness(far) - tissue_brightness(top)) < 0.15 * tissue_brightness(top)
    gain = display_fade(image[1], known[1], row_mm=1.0)
    np.testing.assert_allclose(gain[KNOWN_ROWS + 70 :], 1.0, rtol=0.05)  # the scan's median row's gain


def test_evened_preview_keeps_a_completion_brighter_than_the_scan_brighter():
    image, known = faded_scan(completion_level=2 * MEDIAN_ROW / 0.3)  # twice the scan's usual brightness
    sheet = montage(image, known, LIA_AFFINE)
    top, far = completion_rows(sheet, 0, 30), completion_rows(sheet, KNOWN_ROWS + 70, ROWS)
    assert tissue_brightness(far) > 1.6 * tissue_brightness(top)


def test_evened_preview_keeps_a_brighter_step_at_the_seam_visible():
    image, known = faded_scan(completion_level=1.5)  # the completion at 1.5 x the edge's brightness at once
    sheet = montage(image, known, LIA_AFFINE)
    above, below = (
        completion_rows(sheet, KNOWN_ROWS - 6, KNOWN_ROWS),
        completion_rows(sheet, KNOWN_ROWS + 1, KNOWN_ROWS + 6),
    )
    assert tissue_brightness(below) > 1.3 * tissue_brightness(above)


def test_display_fade_treats_generated_rows_above_the_scan_as_those_below():
    image, known = faded_scan(completion_level=MEDIAN_ROW / 0.3)
    below = display_fade(image[1], known[1], row_mm=1.0)
    above = display_fade(image[1][::-1], known[1][::-1], row_mm=1.0)
    np.testing.assert_allclose(above[::-1], below, rtol=1e-5)


def test_evened_preview_shows_a_completion_at_the_edge_brightness_as_bright_as_the_scan_top():
    image, known = faded_scan(completion_level=1.0)
    untouched = image.copy()
    top, below = completion_panel(montage(image, known, LIA_AFFINE), KNOWN_ROWS / ROWS)
    assert canal_brightness(below) > 0.85 * canal_brightness(top)
    kept_top, kept_below = completion_panel(
        montage(image, known, LIA_AFFINE, even_fade=False), KNOWN_ROWS / ROWS
    )
    assert canal_brightness(kept_below) < 0.5 * canal_brightness(kept_top)  # on one window it is dim
    np.testing.assert_array_equal(image, untouched)  # the picture changes, never the volume


def test_evened_preview_keeps_a_brightness_step_at_the_seam_visible():
    image, known = faded_scan(completion_level=0.5)  # the completion at half the edge's brightness
    top, below = completion_panel(montage(image, known, LIA_AFFINE), KNOWN_ROWS / ROWS)
    assert canal_brightness(below) < 0.7 * canal_brightness(top)
