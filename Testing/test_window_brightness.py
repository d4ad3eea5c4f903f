"""Brightness matched at the window joins of a long completion: on hand-made mosaics whose step is known, and end
to end with a tiny random bundle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import oblique_affine, predicting_bundle, synthetic_scan
from fovcompletion.bundle import CanvasSpec, read_metadata
from fovcompletion.image_io import Volume
from fovcompletion.seam import crossfade_weights
from fovcompletion.window_brightness import WindowRows, band_level, join_log_gain, match_brightness_at_joins

BLACK = -1.0  # the model value of no signal
BAND = 8  # rows either side of a join
SCAN_ROWS, WINDOW, CONTEXT, OVERLAP = 60, 120, 60, 16
STEP = 1.3  # how much brighter than the first the second window draws, about black


def tissue(rows: int, seed: int) -> np.ndarray:
    """A textured body over the middle columns on black (slices, rows, cols), bright tissue near 1."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (3, rows, 40)), (0.5, 1.0, 1.0))
    image = np.full((3, rows, 40), BLACK, dtype=np.float32)
    image[:, :, 8:32] = 0.2 + 0.3 * texture[:, :, 8:32]
    return image


def two_windows(step: float = STEP) -> tuple[np.ndarray, list[WindowRows]]:
    """A mosaic made downwards from a scan: the first window continues the scan's last `CONTEXT` rows, the second
    the first window's last `CONTEXT` rows and draws `step` times as bright; as the sampler records them."""
    height = SCAN_ROWS + 2 * (WINDOW - CONTEXT)
    scan_rows = np.arange(height) < SCAN_ROWS
    image = tissue(height, seed=1)
    filled, windows = scan_rows.copy(), []
    for start in (SCAN_ROWS - CONTEXT, SCAN_ROWS + WINDOW - 2 * CONTEXT):
        rows = slice(start, start + WINDOW)
        windows.append(
            WindowRows(rows, crossfade_weights(filled[rows], ~scan_rows[rows], OVERLAP), ~scan_rows[rows])
        )
        filled[rows] = True
    second = windows[1]
    drawn = BLACK + (tissue(WINDOW, seed=2) - BLACK) * step
    image[:, second.rows] = (
        second.keep[None, :, None] * image[:, second.rows] + (1 - second.keep)[None, :, None] * drawn
    )
    return image, windows


def level_either_side(image: np.ndarray, window: WindowRows) -> tuple[float, float]:
    """The brightness of the band above the rows the second window makes again and of its first own rows."""
    start = window.rows.start
    again = start + int(np.argmax(window.keep < 1))
    own = start + int(np.argmax(window.keep <= 0))
    return (
        band_level(image, np.arange(again - BAND, again), BLACK),
        band_level(image, np.arange(own, own + BAND), BLACK),
    )


def test_a_brighter_later_window_meets_the_rows_it_continues_at_their_level():
    image, windows = two_windows()
    before = level_either_side(image, windows[1])
    assert before[1] / before[0] == pytest.approx(STEP, rel=0.1)  # the step the second window drew
    matched = image.copy()
    match_brightness_at_joins(matched, windows, BLACK, BAND)
    after = level_either_side(matched, windows[1])
    assert after[1] / after[0] == pytest.approx(1.0, abs=0.02)


def test_only_the_later_windows_made_rows_change_and_the_correction_eases_out_to_their_far_end():
    image, windows = two_windows()
    matched = image.copy()
    match_brightness_at_joins(matched, windows, BLACK, BAND)
    second = windows[1]
    first_made = second.rows.start + int(np.argmax(second.keep < 1))
    assert np.array_equal(
        matched[:, :first_made], image[:, :first_made]
    )  # the scan, the first window's own rows
    body = (slice(None), slice(first_made, None), slice(8, 32))
    gain = (matched - BLACK)[body] / (image - BLACK)[body]
    per_row = gain.mean(axis=(0, 2))
    assert np.allclose(gain, per_row[None, :, None], rtol=1e-4)  # one gain per row, about black
    own = second.rows.start + int(np.argmax(second.keep <= 0)) - first_made
    assert per_row[own] == pytest.approx(
        1 / STEP, rel=0.05
    )  # the whole step where the window's own rows begin
    assert np.all(np.diff(per_row[:own]) < 0) and np.all(np.diff(per_row[own:]) > 0)  # eased in, eased out
    assert per_row[-1] == pytest.approx(1.0, abs=0.01)  # back to the window's own brightness at its far end


def test_a_window_that_continues_the_scan_is_left_to_the_seam():
    """The first window's seam with the scan is the feather's (and the known rows are never scaled)."""
    image, windows = two_windows()
    assert join_log_gain(image, windows[0], BLACK, BAND) is None
    only_first = image.copy()
    match_brightness_at_joins(only_first, windows[:1], BLACK, BAND)
    assert np.array_equal(only_first, image)


@pytest.mark.parametrize("step", [1.0, 0.7])
def test_no_step_no_change_and_a_dimmer_window_is_brightened(step):
    image, windows = two_windows(step)
    log_gain = join_log_gain(image, windows[1], BLACK, BAND)
    own = int(np.argmax(windows[1].keep <= 0))
    assert log_gain[own] == pytest.approx(-np.log(step), abs=0.05)


def test_a_band_without_tissue_is_not_a_step():
    image, windows = two_windows()
    second = windows[1]
    own = second.rows.start + int(np.argmax(second.keep <= 0))
    image[:, own : own + BAND] = BLACK  # the later window draws black where its own rows begin
    assert join_log_gain(image, second, BLACK, BAND) is None


def test_a_window_made_upwards_is_matched_at_its_lower_edge():
    """Above the scan the windows move up: the rows a later window continues lie below its own."""
    image, windows = two_windows()
    flipped = [
        WindowRows(
            slice(image.shape[1] - w.rows.stop, image.shape[1] - w.rows.start),
            w.keep[::-1],
            w.generated[::-1],
        )
        for w in windows
    ]
    upwards = image[:, ::-1].copy()
    match_brightness_at_joins(upwards, flipped, BLACK, BAND)
    downwards = image.copy()
    match_brightness_at_joins(downwards, windows, BLACK, BAND)
    assert np.allclose(upwards[:, ::-1], downwards, atol=1e-6)


def test_the_engine_matches_only_the_rows_later_windows_make(tmp_path):
    """End to end: the same draws, matched or not; the scan and the first window's own rows are the same, the later
    windows' rows are scaled."""
    from fovcompletion.benchmark.long_range import window_joins
    from fovcompletion.pipeline import complete

    bundle = predicting_bundle(
        tmp_path / "bundle", canvas=CanvasSpec(shape=(32, 32), spacing_mm=(2.0, 2.0)), name="tiny-windows"
    )
    scan = Volume(synthetic_scan((5, 60, 30)), oblique_affine(angle_deg=0.0))
    joins = window_joins(scan, read_metadata(bundle), 100.0, 5, 32.0)
    runs = [
        complete(
            scan, model=bundle, slices=5, steps=2, extend_inferior_mm=100.0, match_window_brightness=match
        )
        for match in (False, True)
    ]
    raw, matched = (run.image for run in runs)
    first_again = joins[0][0]
    assert np.array_equal(raw[:, : first_again - 1], matched[:, : first_again - 1])
    assert not np.allclose(raw[:, joins[0][1] :], matched[:, joins[0][1] :])


def test_air_below_black_counts_as_black():
    """The decoder's air undershoots black, by different amounts in different windows; the written volume clips it,
    so it is no step."""
    image, windows = two_windows(step=1.0)
    second = windows[1]
    air = np.zeros(image.shape, dtype=bool)
    air[:, : second.rows.start + int(np.argmax(second.keep < 1)), :8] = (
        True  # the earlier rows' air, in front
    )
    image[air] = BLACK - 0.3
    log_gain = join_log_gain(image, second, BLACK, BAND)
    assert abs(log_gain[int(np.argmax(second.keep <= 0))]) < 0.05
