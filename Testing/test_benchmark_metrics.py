"""Benchmark metrics and baselines on hand-made arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from fovcompletion.benchmark.baselines import (
    LibraryEntry,
    RetrievalBaseline,
    constant_fill,
    masked_ncc,
    mirror_fill,
    noise_fill,
)
from fovcompletion.benchmark.cases import hide_rows, phantom_cases
from fovcompletion.benchmark.levels import NEAR_SEAM_MM, level_counts, position_f1
from fovcompletion.benchmark.metrics import (
    PSNR_CAP_DB,
    bands,
    boundary_pairs,
    hidden_ssim,
    quality,
    seam_statistic,
    ssim_map,
)
from fovcompletion.image_io import Volume
from fovcompletion.regions import hidden_blocks, row_distance_mm, visible_range


def binary_visible(shape=(3, 40, 20), hidden=16, seed=0) -> np.ndarray:
    """Visible rows hold only 0s and 1s in equal numbers, so the 0.5/99.5 percentiles are exactly 0 and 1."""
    rng = np.random.default_rng(seed)
    truth = np.full(shape, 0.5)
    visible = rng.permutation(
        np.r_[
            np.zeros(shape[0] * (shape[1] - hidden) * shape[2] // 2),
            np.ones(shape[0] * (shape[1] - hidden) * shape[2] // 2),
        ]
    )
    truth[:, hidden:] = visible.reshape(shape[0], shape[1] - hidden, shape[2])
    return truth


def test_identical_images_are_perfect():
    truth = binary_visible()
    known = hide_rows(truth.shape[1], 16, "superior")
    result = quality(truth.copy(), truth, known, spacing_mm=1.0)
    assert result["ssim"] == pytest.approx(1.0)
    assert result["mae"] == 0.0
    assert result["psnr"] == PSNR_CAP_DB
    assert result["known_max_abs_err"] == 0.0


def test_constant_offset_gives_known_mae_and_psnr():
    truth = binary_visible()
    known = hide_rows(truth.shape[1], 16, "superior")
    assert visible_range(truth, known) == (0.0, 1.0)
    pred = truth.copy()
    pred[:, ~known] += 0.1
    result = quality(pred, truth, known, spacing_mm=1.0)
    assert result["mae"] == pytest.approx(0.1)
    assert result["psnr"] == pytest.approx(20.0)
    assert result["known_max_abs_err"] == 0.0
    pred[:, ~known] = 1.7  # clipped to 1 by the visible range: MAE 0.5
    assert quality(pred, truth, known, spacing_mm=1.0)["mae"] == pytest.approx(0.5)


def test_known_region_error_is_in_units_of_the_visible_range():
    truth = binary_visible() * 200.0 + 100.0  # visible range 100..300
    known = hide_rows(truth.shape[1], 16, "superior")
    pred = truth.copy()
    pred[0, 20, 5] += 50.0
    assert quality(pred, truth, known, spacing_mm=1.0)["known_max_abs_err"] == pytest.approx(0.25)


def test_ssim_of_two_constant_images_has_the_closed_form():
    a, b = np.full((1, 30, 30), 0.5), np.full((1, 30, 30), 0.6)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert np.allclose(ssim_map(a, b), expected)
    noise = np.random.default_rng(1).random((2, 30, 30))
    assert np.allclose(ssim_map(noise, noise), 1.0)
    assert ssim_map(noise, 1 - noise).mean() < 0


def test_bands_split_the_hidden_rows_at_32_mm_and_mark_the_first_8():
    known = hide_rows(40, 30, "inferior")  # rows 0..9 visible, 10..39 hidden
    masks = bands(known, spacing_mm=2.0)
    assert np.flatnonzero(masks[""]).tolist() == list(range(10, 40))
    assert np.flatnonzero(masks["_near"]).tolist() == list(range(10, 26))  # 2, 4 .. 32 mm
    assert np.flatnonzero(masks["_far"]).tolist() == list(range(26, 40))
    assert np.flatnonzero(masks["_seam"]).tolist() == list(range(10, 14))  # 2, 4, 6, 8 mm
    superior = bands(hide_rows(40, 20, "superior"), spacing_mm=1.0)
    assert np.flatnonzero(superior["_near"]).tolist() == list(range(0, 20))
    assert not superior["_far"].any()
    both = np.zeros(100, dtype=bool)
    both[40:60] = True
    near = np.flatnonzero(bands(both, spacing_mm=4.0)["_near"]).tolist()
    assert near == list(range(32, 40)) + list(range(60, 68))
    assert np.flatnonzero(bands(both, spacing_mm=4.0)["_seam"]).tolist() == [38, 39, 60, 61]
    assert boundary_pairs(both) == [(40, 39), (59, 60)]
    assert hidden_blocks(both) == [slice(0, 40), slice(60, 100)]


def test_seam_statistic_on_a_known_step():
    rows = np.arange(40, dtype=float)
    truth = np.broadcast_to(0.01 * rows[None, :, None], (2, 40, 5)).copy()  # natural step 0.01 per row
    known = hide_rows(40, 20, "inferior")
    ratio, jump, natural = seam_statistic(truth, truth, known, spacing_mm=1.0)
    assert (ratio, jump, natural) == pytest.approx((1.0, 0.01, 0.01))
    pred = truth.copy()
    pred[:, 20:] += 0.05  # a visible edge: the step at the seam is 0.06
    ratio, jump, natural = seam_statistic(pred, truth, known, spacing_mm=1.0)
    assert jump == pytest.approx(0.06)
    assert ratio == pytest.approx(6.0)


def test_constant_and_mirror_fill():
    visible = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    filled = constant_fill(visible, 2, 1)
    assert filled.shape == (2, 7, 3)
    assert np.array_equal(filled[:, 2:6], visible)
    assert np.allclose(filled[0, :2], visible[0].mean())
    mirrored = mirror_fill(visible, 2, 1)
    assert np.array_equal(mirrored[:, 2:6], visible)
    assert np.array_equal(mirrored[:, 1], visible[:, 1])  # reflected, boundary row not repeated
    assert np.array_equal(mirrored[:, 0], visible[:, 2])
    assert np.array_equal(mirrored[:, 6], visible[:, 2])


def test_noise_fill_is_texture_without_anatomy_at_the_visible_level():
    """The chance row: the visible rows as given, the hidden ones noise of the visible mean and spread, within
    the visible range, of a 2 mm grain (neighbouring 1 mm rows alike, rows 10 mm apart not), one draw per seed."""
    rng = np.random.default_rng(0)
    visible = (200 + 50 * rng.standard_normal((3, 60, 40))).clip(0).astype(np.float32)
    filled = noise_fill(visible, 40, 30, (1.0, 1.0), seed=5)
    assert filled.shape == (3, 130, 40) and np.array_equal(filled[:, 40:100], visible)
    hidden = np.concatenate([filled[:, :40], filled[:, 100:]], axis=1)
    assert visible.min() <= hidden.min() and hidden.max() <= visible.max()
    assert abs(hidden.mean() - visible.mean()) < 5 and 0.7 < hidden.std() / visible.std() < 1.1
    rows = hidden[:, :, 20]
    near, far = (np.corrcoef(rows[:, :-k].ravel(), rows[:, k:].ravel())[0, 1] for k in (1, 10))
    assert near > 0.7 and abs(far) < 0.2
    assert np.array_equal(noise_fill(visible, 40, 30, (1.0, 1.0), seed=5), filled)
    assert not np.array_equal(noise_fill(visible, 40, 30, (1.0, 1.0), seed=6), filled)


def test_masked_ncc_peaks_at_the_true_shift():
    image = np.random.default_rng(2).random((50, 40))
    template = image[12:30, 7:27]
    ncc, count = masked_ncc(template, image)
    ncc = np.where(count >= template.size, ncc, -1.0)  # tiny overlaps correlate by chance
    i, j = np.unravel_index(np.argmax(ncc), ncc.shape)
    assert (i - (template.shape[0] - 1), j - (template.shape[1] - 1)) == (12, 7)
    assert ncc[i, j] == pytest.approx(1.0)


def test_retrieval_recovers_a_translated_copy_of_the_truth():
    rng = np.random.default_rng(3)
    truth = rng.random((3, 60, 30)).astype(np.float32) * 100
    library_volume = np.zeros((3, 90, 40), dtype=np.float32)
    library_volume[:, 20:80, 6:36] = truth * 0.5 + 7  # shifted, rescaled intensities
    entry = LibraryEntry("sub-other", "cervical", lambda: Volume(library_volume, np.eye(4)))
    decoy = LibraryEntry(
        "sub-self", "cervical", lambda: Volume(truth, np.eye(4))
    )  # the case itself: excluded
    baseline = RetrievalBaseline([entry, decoy])
    known = hide_rows(60, 15, "superior")
    filled = baseline.fill(truth[:, known], 15, 0, (1.0, 1.0), "cervical", "sub-self")
    assert np.allclose(filled, truth, atol=1e-3)
    below = baseline.fill(truth[:, :45], 0, 15, (1.0, 1.0), "lumbar", "sub-self")
    assert np.allclose(below, truth, atol=1e-3)
    assert baseline.last_matches[0].subject == "sub-other"


def test_the_oracle_row_keeps_the_library_spine_nearest_the_truth_not_the_best_correlated_one():
    """Retrieval picks, among the library volumes of the case's region, the one whose band next to the seam
    correlates best; the oracle row tries every one, of any region, and keeps the continuation nearest the hidden
    truth, never the case's own subject."""
    rng = np.random.default_rng(5)
    truth = rng.random((3, 60, 30)).astype(np.float32) * 100
    known = hide_rows(60, 15, "superior")

    def library_volume(band_noise: float, continuation: np.ndarray) -> np.ndarray:
        volume = np.zeros((3, 90, 40), dtype=np.float32)
        volume[:, 20:80, 6:36] = truth + band_noise * rng.standard_normal(truth.shape).astype(np.float32)
        volume[:, 20:35, 6:36] = continuation
        return volume

    # the band matches exactly, the continuation is another spine's; the band matches less, the continuation is true
    decoy = library_volume(0.0, rng.random((3, 15, 30)).astype(np.float32) * 100)
    near = library_volume(5.0, truth[:, :15])
    baseline = RetrievalBaseline(
        [
            LibraryEntry("sub-decoy", "cervical", lambda: Volume(decoy, np.eye(4))),
            LibraryEntry("sub-near", "lumbar", lambda: Volume(near, np.eye(4))),
            LibraryEntry("sub-self", "cervical", lambda: Volume(truth, np.eye(4))),
        ]
    )
    visible = truth[:, known]

    def score(filled: np.ndarray, rows: slice | None = None) -> float:
        return hidden_ssim(filled, truth, known, rows)

    retrieved = baseline.fill(visible, 15, 0, (1.0, 1.0), "cervical", "sub-self")
    assert baseline.last_matches[0].subject == "sub-decoy"
    oracle = baseline.closest(visible, 15, 0, (1.0, 1.0), "sub-self", score)
    assert [match.subject for match in baseline.last_matches] == ["sub-near"]
    assert score(oracle) > 0.9 > 0.2 > score(retrieved)
    assert score(oracle) == pytest.approx(quality(oracle, truth, known, 1.0)["ssim"])  # the benchmark's SSIM
    assert np.array_equal(oracle[:, known], visible)
    # nothing in the library continues the case: the visible mean, as retrieval falls back to
    lonely = RetrievalBaseline([LibraryEntry("sub-self", "cervical", lambda: Volume(truth, np.eye(4)))])
    assert np.array_equal(
        lonely.closest(visible, 15, 0, (1.0, 1.0), "sub-self", score), constant_fill(visible, 15, 0)
    )


def test_the_oracle_row_chooses_each_hidden_block_on_its_own():
    """Hidden above and below, one library volume continues the case upwards only and another downwards only:
    the oracle row takes each block from its own volume, as retrieval does, and so reproduces the truth."""
    rng = np.random.default_rng(7)
    truth = rng.random((3, 60, 30)).astype(np.float32) * 100
    known = np.zeros(60, dtype=bool)
    known[10:50] = True
    upwards, downwards = truth[:, :50].copy(), truth[:, 10:].copy()
    baseline = RetrievalBaseline(
        [
            LibraryEntry("sub-down", "lumbar", lambda: Volume(downwards, np.eye(4))),
            LibraryEntry("sub-up", "lumbar", lambda: Volume(upwards, np.eye(4))),
        ]
    )
    visible = truth[:, known]
    retrieved = baseline.fill(visible, 10, 10, (1.0, 1.0), "lumbar", "sub-self")
    oracle = baseline.closest(
        visible, 10, 10, (1.0, 1.0), "sub-self", lambda filled, rows: hidden_ssim(filled, truth, known, rows)
    )
    assert [match.subject for match in baseline.last_matches] == ["sub-up", "sub-down"]
    assert np.allclose(oracle, truth, atol=1e-3) and np.allclose(retrieved, truth, atol=1e-3)


def test_disc_positions_are_matched_once_within_tolerance():
    assert position_f1([10.0, 30.0], [11.0, 29.0], tolerance=2.0) == 1.0
    assert position_f1([10.0, 10.5], [10.0, 40.0], tolerance=2.0) == pytest.approx(
        0.5
    )  # one hit, one miss each
    assert position_f1([], [10.0], tolerance=2.0) == 0.0
    assert position_f1([], [], tolerance=2.0) == 1.0


@pytest.mark.parametrize("shift_mm", [12, 20])
def test_levels_drawn_off_the_truths_path_are_counted_along_the_completions_own_canal(shift_mm):
    """A completion that draws every level, its spine running a little anterior of the phantom's: the detector on
    the truth's centreline misses them, the count along the completion's own canal finds them all."""
    case = phantom_cases(1, 2.0)[0]
    mid = case.truth.shape[0] // 2
    shift = shift_mm // 2  # columns of 2 mm
    moved = np.roll(case.truth[mid], shift, axis=1)
    moved[:, :shift] = 0.0

    exact = level_counts(case, case.truth[mid], mid)
    assert exact["vertebra_count_error"] == exact["vertebra_count_error_along_own_canal"] == 0

    counts = level_counts(case, moved, mid)
    assert counts["vertebrae_true"] >= 10
    assert counts["vertebra_count_error"] >= counts["vertebrae_true"] / 2  # the placement is scored too
    assert counts["vertebra_count_error_along_own_canal"] <= 1


def test_discs_near_the_seam_are_scored_apart_from_the_whole_hidden_spine():
    """A completion that continues the visible levels correctly for the first 140 mm and then drifts by half a
    level (10 mm, twice the 5 mm tolerance): the discs near the seam score as the truth's own, the whole spine
    loses the drifted ones."""
    case = phantom_cases(1, 2.0)[0]
    mid = case.truth.shape[0] // 2
    distance = row_distance_mm(case.known_rows, 2.0)
    drifted = case.truth[mid].copy()
    far = distance > NEAR_SEAM_MM + 12.0
    drifted[far] = np.roll(case.truth[mid], 5, axis=0)[far]

    truth_counts = level_counts(case, case.truth[mid], mid)
    counts = level_counts(case, drifted, mid)
    assert truth_counts["disc_f1_near_seam"] == truth_counts["disc_f1_near_seam_detected_in_truth"] >= 0.9
    assert counts["disc_f1_near_seam"] >= truth_counts["disc_f1_near_seam"] - 0.05
    assert counts["disc_f1"] <= truth_counts["disc_f1"] - 0.3


def test_levels_are_read_within_the_inputs_range():
    """A method whose values fall far below what it was given (a retrieval fill's intensity fit can) is read as a
    display of the input's range shows it; without that range the detector refuses the image, whose darkest
    values lie below 0, rather than count peaks of noise."""
    case = phantom_cases(1, 2.0)[0]
    mid = case.truth.shape[0] // 2
    given = case.truth[:, case.known_rows]
    input_range = (float(given.min()), float(given.max()))
    undershoot = case.truth[mid].copy()
    hidden = ~case.known_rows
    undershoot[hidden] = np.where(undershoot[hidden] < 50.0, -400.0, undershoot[hidden])

    assert level_counts(case, case.truth[mid], mid)["vertebra_count_error"] == 0
    assert level_counts(case, undershoot, mid, input_range)["vertebra_count_error"] == 0
    with pytest.raises(ValueError, match="background at 0"):
        level_counts(case, undershoot, mid)
