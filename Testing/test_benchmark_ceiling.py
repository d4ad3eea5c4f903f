"""The ceiling rows follow the bundle: its canvas spacing, its intensity normalisation, its autoencoder, its UNet."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import with_output_weights
from fovcompletion.benchmark.appearance import sharpness
from fovcompletion.benchmark.cases import Case, hide_rows
from fovcompletion.benchmark.ceiling import ceiling_fill, model_known_rows, prepared_truth
from fovcompletion.bundle import CanvasSpec, IntensitySpec, load_bundle
from fovcompletion.bundle_factory import create_random_bundle
from fovcompletion.regions import scale_unit, visible_range

SPACING = 2.0
LIA = np.array([[-SPACING, 0, 0, 10.0], [0, 0, SPACING, -40.0], [0, -SPACING, 0, 60.0], [0, 0, 0, 1]])
HIDDEN = 16  # rows (32 mm) hidden at the inferior end


def textured_case() -> Case:
    """A textured slab in the model orientation whose hidden rows mirror visible ones (same value range)."""
    rng = np.random.default_rng(4)
    visible = 100 + 400 * np.abs(ndimage.gaussian_filter(rng.normal(0, 1, (5, 40, 32)), (0, 1.2, 1.2)))
    truth = np.concatenate([visible, visible[:, -2 : -HIDDEN - 2 : -1]], axis=1).astype(np.float32)
    known = hide_rows(truth.shape[1], HIDDEN, "inferior")
    return Case("slab/inferior", "sub-slab", "real", "lumbar", truth, LIA, known)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Tiny bundles that differ only in what the ceiling must follow."""
    folder = tmp_path_factory.mktemp("ceiling")
    exact = IntensitySpec(lower_percentile=0.0, upper_percentile=100.0, clip=False)

    def make(name: str, spacing: float, intensity: IntensitySpec):
        canvas = CanvasSpec(shape=(32, 32), spacing_mm=(spacing, spacing))
        return load_bundle(create_random_bundle(folder / name, canvas=canvas, name=name, intensity=intensity))

    return {
        "same-grid": make("same-grid", SPACING, exact),
        "coarse-grid": make("coarse-grid", 2 * SPACING, exact),
        "capped": make("capped", SPACING, IntensitySpec()),  # the reference: percentile 0..95, clipped
    }


def hidden_sharpness(pred: np.ndarray, case: Case) -> float:
    low, high = visible_range(case.truth, case.known_rows)
    return sharpness(scale_unit(pred, low, high), scale_unit(case.truth, low, high), ~case.known_rows)


def test_on_the_scans_own_grid_without_a_cap_the_grid_ceiling_is_the_truth(bundles):
    case = textured_case()
    grid = ceiling_fill("grid", case, bundles["same-grid"], 5)
    assert grid.shape == case.truth.shape
    assert np.allclose(grid, case.truth, atol=1e-3)


def test_a_coarser_canvas_loses_detail(bundles):
    case = textured_case()
    coarse = ceiling_fill("grid", case, bundles["coarse-grid"], 5)
    assert np.array_equal(coarse[:, case.known_rows], case.truth[:, case.known_rows])  # pasted back
    assert hidden_sharpness(coarse, case) < 0.8
    fine = ceiling_fill("grid", case, bundles["same-grid"], 5)
    assert hidden_sharpness(fine, case) == pytest.approx(1.0, abs=1e-3)


def test_the_normalisation_cap_fitted_on_the_visible_rows_caps_the_hidden_truth(bundles):
    case = textured_case()
    capped = ceiling_fill("grid", case, bundles["capped"], 5)
    cap = np.percentile(case.truth[:, case.known_rows], 95.0)
    hidden = capped[:, ~case.known_rows]
    assert hidden.max() == pytest.approx(cap, rel=1e-4)  # the bright tissue is flattened at the cap ...
    assert case.truth[:, ~case.known_rows].max() > 1.2 * cap  # ... although the truth is far brighter


def test_the_autoencoder_ceiling_goes_through_the_bundles_vq_vae(bundles):
    case = textured_case()
    bundle = bundles["same-grid"]
    decoded = ceiling_fill("autoencoder", case, bundle, 5)
    grid = ceiling_fill("grid", case, bundle, 5)
    assert decoded.shape == case.truth.shape
    assert np.array_equal(decoded[:, case.known_rows], case.truth[:, case.known_rows])
    assert not np.allclose(decoded[:, ~case.known_rows], grid[:, ~case.known_rows], atol=1.0)
    given = case.truth[:, case.known_rows]
    assert decoded.min() >= given.min() and decoded.max() <= given.max()  # clipped as the engine clips


def test_the_denoise_ceiling_follows_the_truth_at_low_noise_and_forgets_it_at_high(tmp_path):
    case = textured_case()
    exact = IntensitySpec(lower_percentile=0.0, upper_percentile=100.0, clip=False)
    canvas = CanvasSpec(shape=(32, 32), spacing_mm=(SPACING, SPACING))
    bundle = with_output_weights(
        load_bundle(create_random_bundle(tmp_path / "b", canvas=canvas, intensity=exact))
    )
    decoded = ceiling_fill("autoencoder", case, bundle, 5)
    low = ceiling_fill("denoise", case, bundle, 5, level=20, seed=1)
    high = ceiling_fill("denoise", case, bundle, 5, level=999, seed=1)
    assert np.array_equal(low[:, case.known_rows], case.truth[:, case.known_rows])  # pasted back
    given = case.truth[:, case.known_rows]
    assert high.min() >= given.min() and high.max() <= given.max()  # clipped as the engine clips
    hidden = ~case.known_rows

    def error(pred: np.ndarray) -> float:
        return float(np.abs(pred[:, hidden] - decoded[:, hidden]).mean())

    assert error(low) < 0.5 * error(high)  # a little noise: the autoencoder's image comes back
    assert np.array_equal(low, ceiling_fill("denoise", case, bundle, 5, level=20, seed=1))  # seeded


def test_model_rows_are_known_only_where_every_native_row_they_sample_is(bundles):
    case = textured_case()
    _, whole = prepared_truth(case, bundles["same-grid"].metadata, 5)
    assert np.array_equal(model_known_rows(whole, case.known_rows), case.known_rows)
    _, coarse = prepared_truth(case, bundles["coarse-grid"].metadata, 5)
    known = model_known_rows(coarse, case.known_rows)
    native = coarse.model_to_native[1, 3] + coarse.model_to_native[1, 1] * np.arange(known.size)
    assert known.sum() >= np.floor(case.known_rows.sum() / 2)  # the 4 mm rows over the visible 2 mm rows ...
    assert (native[known] <= np.flatnonzero(case.known_rows)[-1]).all()  # ... and none past them
