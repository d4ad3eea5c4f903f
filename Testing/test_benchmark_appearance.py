"""The benchmark's appearance metrics on hand-made slabs whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fovcompletion.benchmark.appearance import (
    appearance_metrics,
    canal_columns,
    value_range_violations,
)
from fovcompletion.benchmark.cases import hide_rows
from fovcompletion.benchmark.metrics import quality
from fovcompletion.canal import ridge_strength, track_canal

SPACING = (1.0, 1.0)
SHAPE = (5, 96, 90)  # slices, S-I rows (1 mm), A-P cols (1 mm)
HIDDEN = 40  # the inferior 40 rows are completed
CANAL_COL = 45


def spine_like(seed: int = 0, canal_col=CANAL_COL) -> np.ndarray:
    """Air, a body over columns 6-65 (level 300, textured), a bright 8 mm canal (level 900) along `canal_col`."""
    rng = np.random.default_rng(seed)
    slab = np.zeros(SHAPE)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), (0.8, 1.5, 1.5))
    slab[:, :, 6:66] = 300 + 400 * texture[:, :, 6:66]
    cols = np.arange(SHAPE[2])[None, None, :]
    centre = np.broadcast_to(np.asarray(canal_col, dtype=float).reshape(1, -1, 1), (1, SHAPE[1], 1))
    slab = np.where(np.abs(cols - centre) <= 4, 900 + 50 * texture, slab)
    return np.clip(slab, 0, None)


def known_rows() -> np.ndarray:
    return hide_rows(SHAPE[1], HIDDEN, "inferior")


def metrics_of(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return appearance_metrics(pred, truth, known_rows(), SPACING)


def test_a_copy_is_perfect_on_every_appearance_metric():
    truth = spine_like()
    result = metrics_of(truth.copy(), truth)
    assert result == pytest.approx(
        {
            "ssim_tissue": 1.0,
            "sharpness": 1.0,
            "edge_sharpness": 1.0,
            "seam_brightness": 1.0,
            "canal_continuity": 1.0,
            "canal_reach": 1.0,
            "slice_consistency": 1.0,
            "value_range_violations": 0.0,
        }
    )


def test_a_blurred_copy_is_less_sharp_and_noise_is_sharper():
    truth = spine_like()
    known = known_rows()
    blurred = truth.copy()
    blurred[:, ~known] = ndimage.gaussian_filter(truth, (0, 2, 2))[:, ~known]
    assert 0.2 < metrics_of(blurred, truth)["sharpness"] < 0.8
    noisy = truth + np.random.default_rng(5).normal(0, 60, truth.shape) * ~known[None, :, None]
    assert metrics_of(noisy, truth)["sharpness"] > 1.2


def test_edge_sharpness_loses_with_blur_and_is_not_raised_by_grain():
    truth = spine_like()
    known = known_rows()
    blurred = truth.copy()
    blurred[:, ~known] = ndimage.gaussian_filter(truth, (0, 2, 2))[:, ~known]
    assert metrics_of(blurred, truth)["edge_sharpness"] < 0.85
    noisy = truth + np.random.default_rng(5).normal(0, 60, truth.shape) * ~known[None, :, None]
    grainy = metrics_of(noisy, truth)
    assert grainy["sharpness"] > 1.2  # the plain gradient counts the grain as detail
    assert grainy["edge_sharpness"] < 1.1  # past the edge scale, the anatomy is what is left


@pytest.mark.parametrize("factor", [0.5, 0.7, 1.25])
def test_a_dimmed_copy_has_the_dimming_factor_as_seam_brightness(factor):
    truth = spine_like()
    pred = truth.copy()
    pred[:, ~known_rows()] *= factor
    assert metrics_of(pred, truth)["seam_brightness"] == pytest.approx(factor)


def test_seam_brightness_looks_at_the_first_16_mm_only():
    truth = spine_like()
    pred = truth.copy()
    pred[:, SHAPE[1] - HIDDEN + 16 :] = 0.0  # dark from 17 mm past the seam on: not this metric's business
    assert metrics_of(pred, truth)["seam_brightness"] == pytest.approx(1.0)


def test_tissue_ssim_ignores_a_faint_level_painted_on_the_background():
    truth = spine_like()
    pred = truth.copy()
    background = (truth == 0) & ~known_rows()[None, :, None]
    pred[background] = 60.0  # a faint grey where the truth is exactly zero
    whole = quality(pred, truth, known_rows(), 1.0)
    assert whole["ssim"] < 0.95  # whole-region SSIM drops
    assert whole["ssim_tissue"] > 0.99  # tissue SSIM does not


def test_canal_continuity_counts_the_rows_where_the_canal_stays_bright():
    truth = spine_like()
    known = known_rows()
    seam = SHAPE[1] - HIDDEN
    faded = truth.copy()
    tissue_only = spine_like(canal_col=-100)  # the same texture, no canal
    faded[:, seam + 20 :] = tissue_only[:, seam + 20 :]  # the canal stops 20 mm past the seam
    # 20 of the 40 completed rows, give or take the 2 mm smoothing along the rows that tests for a ridge
    assert 0.5 <= metrics_of(faded, truth)["canal_continuity"] <= 0.55
    gone = truth.copy()
    gone[:, ~known] = tissue_only[:, ~known]
    assert (
        metrics_of(gone, truth)["canal_continuity"] <= 0.05
    )  # smoothing carries it a row or two past the seam
    dim = truth.copy()
    dim[:, ~known] = np.where(truth[:, ~known] > 800, 600.0, truth[:, ~known])  # a dimmer canal is still one
    assert metrics_of(dim, truth)["canal_continuity"] == 1.0
    near = spine_like(canal_col=CANAL_COL + 3)  # 3 mm off: within the 4 mm tolerance
    far = spine_like(canal_col=CANAL_COL + 12)  # 12 mm off: another place
    for moved, expected in ((near, 1.0), (far, 0.0)):
        pred = truth.copy()
        pred[:, ~known] = moved[:, ~known]
        assert metrics_of(pred, truth)["canal_continuity"] == expected


def test_canal_reach_follows_the_completed_canal_wherever_it_runs_until_it_fades():
    truth = spine_like()
    known = known_rows()
    seam = SHAPE[1] - HIDDEN
    tissue_only = spine_like(canal_col=-100)  # the same texture, no canal
    faded = truth.copy()
    faded[:, seam + 20 :] = tissue_only[:, seam + 20 :]  # the canal stops 20 mm past the seam
    # 20 of the truth's 40 mm, and a few more: the 8 mm average of the ridge carries the canal past its end
    assert 0.5 <= metrics_of(faded, truth)["canal_reach"] <= 0.65
    gone = truth.copy()
    gone[:, ~known] = tissue_only[:, ~known]
    assert metrics_of(gone, truth)["canal_reach"] <= 0.15
    noisy = gone.copy()  # no canal, but noise whose peaks a track could string together
    noisy[:, ~known] += np.random.default_rng(1).normal(0, 200, noisy[:, ~known].shape)
    assert metrics_of(noisy, truth)["canal_reach"] <= 0.15
    # drifting 20 mm off the truth's canal: canal continuity loses it, a reader sees a canal all the way down
    moved = truth.copy()
    drift = np.r_[np.full(seam, CANAL_COL), CANAL_COL + np.arange(1, HIDDEN + 1) * 0.5]
    moved[:, ~known] = spine_like(canal_col=drift)[:, ~known]
    assert metrics_of(moved, truth)["canal_reach"] == 1.0
    assert metrics_of(moved, truth)["canal_continuity"] <= 0.6  # lost once 4 mm off, about halfway
    gap = truth.copy()  # a 6 mm dropout (a bulging disc) is forgiven, a 12 mm one ends the canal
    gap[:, seam + 10 : seam + 16] = tissue_only[:, seam + 10 : seam + 16]
    assert metrics_of(gap, truth)["canal_reach"] == 1.0
    gap[:, seam + 10 : seam + 22] = tissue_only[:, seam + 10 : seam + 22]
    assert 0.25 <= metrics_of(gap, truth)["canal_reach"] <= 0.4
    # the truth's own canal ends 20 mm past the seam (the dural sac): a completion that lasts that far is complete
    assert metrics_of(faded, faded)["canal_reach"] == 1.0
    assert metrics_of(truth, faded)["canal_reach"] == 1.0  # never above 1
    assert np.isnan(metrics_of(truth, tissue_only)["canal_reach"])  # the truth shows no canal to reach


def test_canal_reach_caps_each_hidden_block_at_the_truths():
    both = np.ones(SHAPE[1], dtype=bool)
    both[:20], both[-20:] = False, False  # 20 mm hidden above and below
    tissue_only = spine_like(canal_col=-100)
    truth = spine_like()
    truth[:, -10:] = tissue_only[:, -10:]  # the real canal ends 10 mm into the lower block
    pred = spine_like()
    pred[:, :20] = tissue_only[:, :20]  # no canal above; below, one that goes on past the real one's end
    # above 0 of 20 mm, below all of the truth's 10 (14, as averaged): about 0.4, where counting the lower block's
    # extra reach against the upper's loss would give about 0.6
    assert 0.35 <= appearance_metrics(pred, truth, both, SPACING)["canal_reach"] <= 0.45


def test_slices_that_disagree_are_less_consistent_and_identical_ones_more():
    truth = spine_like()
    hidden = ~known_rows()
    shuffled = truth.copy()
    for index in range(SHAPE[0]):  # each slice draws its own texture
        shuffled[index][hidden] = spine_like(seed=10 + index)[index][hidden]
    assert metrics_of(shuffled, truth)["slice_consistency"] < 0.9
    same = truth.copy()
    same[:, hidden] = truth[SHAPE[0] // 2][hidden]  # every slice the middle one
    assert metrics_of(same, truth)["slice_consistency"] > 1.0


def test_value_range_violations_are_the_fraction_outside_the_input_range():
    truth = spine_like()
    pred = truth.copy()
    pred[0, -1, :9] = -5.0  # 9 voxels below the input minimum (0) ...
    pred[1, -1, 10] = 5000.0  # ... and 1 above its maximum
    assert metrics_of(pred, truth)["value_range_violations"] == pytest.approx(10 / truth.size)
    assert value_range_violations(np.array([0.0, 1.0, 1.0 + 1e-9]), (0.0, 1.0)) == 0.0  # rounding forgiven
    assert value_range_violations(np.array([-1.0, 0.5, 2.0, 0.0]), (0.0, 1.0)) == 0.5


def test_quality_carries_the_appearance_metrics():
    truth = spine_like()
    result = quality(truth.copy(), truth, known_rows(), 1.0, spacing_ap_mm=1.0, input_range=(0.0, 1e4))
    for key in (
        "ssim_tissue",
        "sharpness",
        "edge_sharpness",
        "seam_brightness",
        "canal_continuity",
        "canal_reach",
        "slice_consistency",
        "value_range_violations",
    ):
        assert key in result


def test_the_canal_tracker_follows_a_curved_canal_and_not_the_fat_under_the_skin():
    rows = np.arange(SHAPE[1])
    curve = CANAL_COL + 8 * np.sin(rows / SHAPE[1] * np.pi)
    truth = spine_like(canal_col=curve)
    truth[:, :, 7:10] = 1000.0  # a bright line of subcutaneous fat just under the skin of the back
    unit = truth[2] / truth.max()
    path = canal_columns(unit, SPACING)
    assert np.abs(path - curve).max() <= 4.0  # inside the 8 mm canal on every row
    strength = ridge_strength(unit, SPACING)
    assert np.isinf(strength[:, 8]).all()  # the fat is within 25 mm of the skin: never the canal
    assert np.array_equal(track_canal(strength, SPACING), path)
