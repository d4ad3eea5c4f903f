"""Brightness matched at the window joins of a long completion: on hand-made mosaics whose steps are known, and end
to end with a tiny random bundle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import oblique_affine, synthetic_scan
from fovcompletion.bundle import IntensitySpec, read_metadata
from fovcompletion.image_io import Volume
from fovcompletion.intensity import IntensityScaling
from fovcompletion.seam import crossfade_weights
from fovcompletion.window_brightness import (
    WindowRows,
    band_level,
    generated_rows,
    join_log_gain,
    match_brightness_at_joins,
)

BLACK = -1.0  # the model value of no signal
BAND = 8  # rows either side of a join
EASE = 24  # rows before the band over which the correction fades in
SCAN_ROWS, WINDOW, CONTEXT, OVERLAP = 60, 120, 60, 16
STEP = 1.3  # how much brighter than the window before it a later window draws, about black


def tissue(rows: int, seed: int) -> np.ndarray:
    """A textured body over the middle columns on black (slices, rows, cols), bright tissue near 1."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (3, rows, 40)), (0.5, 1.0, 1.0))
    image = np.full((3, rows, 40), BLACK, dtype=np.float32)
    image[:, :, 8:32] = 0.2 + 0.3 * texture[:, :, 8:32]
    return image


def mosaic(
    steps: tuple[float, ...] = (STEP,), overlap: int = OVERLAP, last_own: int | None = None
) -> tuple[np.ndarray, list[WindowRows]]:
    """A mosaic made downwards from a scan, as the sampler records it: the first window continues the scan's last
    `CONTEXT` rows, each later one the last `CONTEXT` rows before it and draws `steps[k]` times as bright as the one
    before it (cross-fading `overlap` rows); the last one makes `last_own` rows alone (default: a whole window's)."""
    own = [WINDOW - CONTEXT] * len(steps) + [last_own or WINDOW - CONTEXT]
    height = SCAN_ROWS + sum(own)
    scan_rows = np.arange(height) < SCAN_ROWS
    image = tissue(height, seed=1)
    filled, windows, end, brightness = scan_rows.copy(), [], SCAN_ROWS, 1.0
    for index, made in enumerate(own):
        rows = slice(end + made - WINDOW, end + made)
        window = WindowRows(
            rows, crossfade_weights(filled[rows], ~scan_rows[rows], overlap), ~scan_rows[rows]
        )
        if index:
            brightness *= steps[index - 1]
            drawn = BLACK + (tissue(WINDOW, seed=2 + index) - BLACK) * brightness
            keep = window.keep[None, :, None]
            image[:, rows] = keep * image[:, rows] + (1 - keep) * drawn
        windows.append(window)
        filled[rows] = True
        end += made
    return image, windows


def join_rows(window: WindowRows) -> tuple[int, int]:
    """Mosaic rows of a downward window's first row made again and first row made alone."""
    start = window.rows.start
    return start + int(np.argmax(window.keep < 1)), start + int(np.argmax(window.keep <= 0))


def step_at(image: np.ndarray, window: WindowRows, band: int = BAND) -> float:
    """The brightness of a window's first `band` own rows over that of the band above the rows it makes again."""
    again, own = join_rows(window)
    return band_level(image, np.arange(own, own + band), BLACK) / band_level(
        image, np.arange(again - BAND, again), BLACK
    )


def generated(image: np.ndarray, windows: list[WindowRows]) -> np.ndarray:
    return generated_rows(image.shape[1], windows)


def matched(image: np.ndarray, windows: list[WindowRows], ease: int = EASE) -> np.ndarray:
    copy = image.copy()
    match_brightness_at_joins(copy, windows, BLACK, BAND, ease)
    return copy


def test_a_brighter_later_window_meets_the_rows_it_continues_at_their_level():
    image, windows = mosaic()
    assert step_at(image, windows[1]) == pytest.approx(STEP, rel=0.1)  # the step the second window drew
    assert step_at(matched(image, windows), windows[1]) == pytest.approx(1.0, abs=1e-3)


def gain_per_row(after: np.ndarray, image: np.ndarray, rows: slice) -> np.ndarray:
    """The gain about black of each row's body, checked to be one gain per row."""
    body = (slice(None), rows, slice(8, 32))
    gain = (after - BLACK)[body] / (image - BLACK)[body]
    per_row = gain.mean(axis=(0, 2))
    assert np.allclose(gain, per_row[None, :, None], rtol=1e-4)
    return per_row


def test_only_the_earlier_rows_change_held_over_the_band_and_eased_in_before_it():
    """The first window's own rows are brought to the second's level, the second's own rows keep the brightness they
    were drawn at, and the rows beyond the ease (the scan among them) are untouched."""
    image, windows = mosaic()
    after = matched(image, windows)
    first_made, own_row = join_rows(windows[1])
    band = slice(first_made - BAND, first_made)
    assert np.array_equal(after[:, own_row:], image[:, own_row:])  # the later window as drawn
    assert np.array_equal(after[:, :SCAN_ROWS], image[:, :SCAN_ROWS])  # the scan
    held = gain_per_row(after, image, band)
    assert np.allclose(held, held[0]) and held[0] == pytest.approx(STEP, rel=0.05)  # the band matched on
    # eased out over the cross-faded rows, and in linearly over the rows before the band
    assert np.all(np.diff(gain_per_row(after, image, slice(first_made - 1, own_row + 1))) < 0)
    eased = gain_per_row(after, image, slice(first_made - BAND - EASE, first_made - BAND))
    assert np.allclose(np.diff(np.log(eased)), np.log(held[0]) / (EASE + 1), rtol=1e-3)
    assert np.array_equal(after[:, : first_made - BAND - EASE], image[:, : first_made - BAND - EASE])


def test_the_ease_stops_a_band_short_of_the_scan():
    """Where fewer generated rows than the ease lie before the band, the ease is made over them: the scan and the
    band of generated rows beside it, where the completion meets the scan, are not scaled."""
    image, windows = mosaic()
    first_made, _ = join_rows(windows[1])
    room = first_made - BAND - SCAN_ROWS - BAND
    after = matched(image, windows, ease=3 * room)
    assert np.array_equal(after[:, : SCAN_ROWS + BAND], image[:, : SCAN_ROWS + BAND])
    eased = gain_per_row(after, image, slice(SCAN_ROWS + BAND, first_made - BAND))
    assert eased[0] == pytest.approx(STEP ** (1 / (room + 1)), rel=1e-3)
    assert step_at(after, windows[1]) == pytest.approx(1.0, abs=1e-3)


def test_no_rows_to_ease_over_no_match():
    """A later window whose band lies within two bands of the scan has too few rows to ease its step over: it is
    left as drawn rather than stepped next to the seam."""
    image, windows = mosaic(overlap=WINDOW - CONTEXT - 2 * BAND - 4)
    first_made, _ = join_rows(windows[1])
    assert 0 < first_made - BAND - SCAN_ROWS - BAND < BAND  # a few rows to ease over: too few
    assert join_log_gain(image, windows[1], generated(image, windows), BLACK, BAND, EASE) is None


def test_each_window_is_matched_to_what_the_one_after_it_became():
    """With an ease longer than a window, the last join's correction reaches back over the join before it: that join
    is matched on the corrected rows, not on those the model drew."""
    image, windows = mosaic(steps=(STEP, STEP))
    after = matched(image, windows, ease=200)
    assert step_at(image, windows[2]) == pytest.approx(STEP, rel=0.1)
    assert [step_at(after, window) for window in windows[1:]] == pytest.approx([1.0, 1.0], abs=1e-3)


def test_windows_without_a_cross_fade_are_matched_at_their_first_row():
    image, windows = mosaic(overlap=0)
    assert step_at(matched(image, windows), windows[1]) == pytest.approx(1.0, abs=1e-3)


def test_a_last_window_shorter_than_the_band_is_brought_to_the_rows_before_it():
    """Its few rows cannot set the level of a whole window before it: it is matched to that window instead, which
    keeps its own rows as drawn."""
    image, windows = mosaic(steps=(STEP, STEP), last_own=3)
    after = matched(image, windows)
    assert step_at(image, windows[2], band=3) == pytest.approx(STEP, rel=0.1)
    assert step_at(after, windows[2], band=3) == pytest.approx(1.0, abs=1e-3)
    second_own, last_again = join_rows(windows[1])[1], join_rows(windows[2])[0]
    assert np.array_equal(after[:, second_own:last_again], image[:, second_own:last_again])


def test_a_window_that_continues_the_scan_is_left_to_the_seam():
    """The first window's seam with the scan is the feather's (and the known rows are never scaled)."""
    image, windows = mosaic()
    assert join_log_gain(image, windows[0], generated(image, windows), BLACK, BAND, EASE) is None
    assert np.array_equal(matched(image, windows[:1]), image)


@pytest.mark.parametrize(("step", "gain"), [(1.0, 1.0), (0.7, 0.7), (3.0, 2.0)])
def test_no_step_no_change_before_a_dimmer_window_dimmed_and_a_jump_is_not_a_gain(step, gain):
    """Beyond a factor of 2 a step is not a gain (a band gone black, other anatomy): it is evened only that far."""
    image, windows = mosaic((step,))
    log_gain = join_log_gain(image, windows[1], generated(image, windows), BLACK, BAND, EASE)
    first_made, _ = join_rows(windows[1])
    assert np.exp(log_gain[first_made - 1]) == pytest.approx(gain, rel=0.05)


def test_a_band_without_tissue_is_not_a_step():
    image, windows = mosaic()
    _, own = join_rows(windows[1])
    image[:, own : own + BAND] = BLACK  # the later window draws black where its own rows begin
    assert join_log_gain(image, windows[1], generated(image, windows), BLACK, BAND, EASE) is None


def test_air_below_black_counts_as_black():
    """The decoder's air undershoots black, by different amounts in different windows; the written volume clips it,
    so it is no step."""
    image, windows = mosaic((1.0,))
    air = np.zeros(image.shape, dtype=bool)
    air[:, : join_rows(windows[1])[0], :8] = True  # the earlier rows' air, in front
    image[air] = BLACK - 0.3
    log_gain = join_log_gain(image, windows[1], generated(image, windows), BLACK, BAND, EASE)
    assert abs(log_gain[join_rows(windows[1])[0] - 1]) < 0.05


@pytest.mark.parametrize("ease", [EASE, 200])
def test_a_window_made_upwards_is_matched_at_its_lower_edge(ease):
    """Above the scan the windows move up: the rows a later window continues lie below its own (with a long ease,
    it stops a band short of the scan there too)."""
    image, windows = mosaic()
    height = image.shape[1]
    flipped = [
        WindowRows(slice(height - w.rows.stop, height - w.rows.start), w.keep[::-1], w.generated[::-1])
        for w in windows
    ]
    upwards = matched(image[:, ::-1].copy(), flipped, ease)[:, ::-1]
    assert np.allclose(upwards, matched(image, windows, ease), atol=1e-6)
    assert np.array_equal(upwards[:, : SCAN_ROWS + BAND], image[:, : SCAN_ROWS + BAND])


@pytest.mark.parametrize("low", [0.0, 40.0])
def test_black_is_the_model_value_of_no_signal(low):
    """The point the gain scales about: scanner 0 in model units, where the scan's lower percentile is 0 or not."""
    scaling = IntensityScaling(low, 500.0, IntensitySpec(clip=False))
    assert scaling.zero_level() == pytest.approx(float(scaling.normalise(np.zeros(1))[0]))
    assert scaling.denormalise(np.float32(scaling.zero_level())) == pytest.approx(0.0, abs=1e-3)


def test_the_engine_scales_only_the_rows_before_the_last_window(windowed_bundle):
    """End to end: the same draws, matched or not; the scan and the last window's own rows are the same, the
    earlier windows' rows are scaled."""
    from fovcompletion.benchmark.long_range import window_joins
    from fovcompletion.pipeline import complete

    scan = Volume(synthetic_scan((5, 60, 30)), oblique_affine(angle_deg=0.0))
    joins = window_joins(scan, read_metadata(windowed_bundle), 120.0, 5, 32.0)
    runs = [
        complete(
            scan,
            model=windowed_bundle,
            slices=5,
            steps=2,
            extend_inferior_mm=120.0,  # the last window makes more than a band alone
            match_window_brightness=match,
        )
        for match in (False, True)
    ]
    raw, after = (run.image for run in runs)
    scan_rows = scan.array.shape[1]  # 1 mm rows; the output writes the scan's own voxels back
    last_own = joins[-1][1] + 1  # one row past the join: the output interpolates
    assert len(joins) > 1
    kept = scan_rows + 15  # the 16 mm beside the scan, less a row the output interpolates
    assert np.array_equal(raw[:, :kept], after[:, :kept])
    assert np.array_equal(raw[:, last_own:], after[:, last_own:])
    assert not np.allclose(raw[:, scan_rows : joins[-1][0]], after[:, scan_rows : joins[-1][0]])
