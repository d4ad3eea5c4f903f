"""Canvas layout and progressive outpainting: any extent with any canvas, windows overlap, no gaps, no steps."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import oblique_affine, synthetic_scan
from fovcompletion import pipeline
from fovcompletion.bundle import read_metadata
from fovcompletion.errors import InputError
from fovcompletion.layout import MAX_TOTAL_EXTENSION_MM, plan_layout, plan_windows
from fovcompletion.pipeline import complete
from fovcompletion.seam import crossfade_weights


@pytest.mark.parametrize(
    ("top", "bottom", "known", "height", "context"),
    [
        (-10, 200, (0, 30), 32, 16),
        (-150, 40, (0, 40), 32, 8),
        (-50, 90, (0, 10), 64, 32),
        (-60, 10, (0, 10), 40, 30),  # upwards only, from a scan shorter than the context
    ],
)
def test_windows_cover_every_row_and_keep_context(top, bottom, known, height, context):
    starts = plan_windows(top, bottom, known, height, context)
    known_rows = np.zeros(bottom - top, dtype=bool)
    known_rows[known[0] - top : known[1] - top] = True
    covered = known_rows.copy()
    for start in starts:
        window = slice(start - top, start - top + height)
        assert start >= top and start + height <= bottom
        assert known_rows[window].sum() >= min(context, known[1] - known[0])  # conditioned on something known
        covered[window] = True
        known_rows[window] = True
    assert covered.all()


def test_zero_extension_is_refused(tiny_bundle):
    with pytest.raises(InputError, match="nothing to complete"):
        plan_layout(read_metadata(tiny_bundle), 30, 20, 0, 0)


def test_extensions_no_body_has_are_refused_by_the_layout(tiny_bundle):
    metadata = read_metadata(tiny_bundle)
    half = MAX_TOTAL_EXTENSION_MM / 2
    assert plan_layout(metadata, 30, 20, half, half).windows > 40  # the limit itself is planned
    for superior, inferior, match in [
        (half, half + 1, "extending by 1501 mm"),
        (0, 1e5, "at most 1500 mm in total"),
        (0, float("inf"), "finite"),
        (float("nan"), 20, "finite"),
        (-5, 20, "zero or positive"),
    ]:
        with pytest.raises(InputError, match=match):
            plan_layout(metadata, 30, 20, superior, inferior)


def test_the_api_refuses_an_absurd_extension_before_loading_a_model(tmp_path):
    with pytest.raises(InputError, match="more than any body needs"):
        complete(synthetic_scan(), oblique_affine(), model=tmp_path / "no-such-model", extend_inferior_mm=1e5)


def test_windowed_outpainting_stitches_without_gaps(tiny_bundle):
    scan = synthetic_scan((3, 30, 24))
    result = complete(
        scan,
        oblique_affine((2.0, 2.0, 2.0), 0.0),
        model=tiny_bundle,
        slices=1,
        steps=2,
        extend_inferior_mm=200,
        extend_superior_mm=90,
    )
    metadata = read_metadata(tiny_bundle)
    layout = plan_layout(metadata, 30, 24, 90, 200)
    assert layout.windows > 4  # the 64 mm canvas must move along the 350 mm field of view
    plane = result.image[0]
    assert plane.shape == (30 + 45 + 100, 24)
    assert np.isfinite(plane).all()
    # every output row holds generated or known content, none is left as canvas padding
    padding_value = result.image[result.mask == 1].min() - 1
    assert (plane > padding_value).all()
    row_std = plane.std(axis=1)
    assert (row_std > 0).all()


def test_a_scan_shorter_than_the_context_extends_upwards_over_several_windows(tiny_bundle):
    """Upwards only, the first window must still end at the scan's last row (it ran past it, and the paste
    failed on mismatched shapes)."""
    result = complete(
        synthetic_scan((3, 10, 30)),
        oblique_affine((2.0, 2.0, 2.0), 0.0),
        model=tiny_bundle,
        slices=1,
        steps=2,
        extend_superior_mm=60,
    )
    assert result.image.shape[1] == 10 + 30 and np.isfinite(result.image).all()


def test_crossfade_weights_fade_only_rows_an_earlier_window_made():
    # rows 0-3 the scan's, 4-9 an earlier window's, then rows this window makes
    filled = np.array([True] * 10 + [False] * 6)
    generated = np.array([False] * 4 + [True] * 12)
    weights = crossfade_weights(filled, generated, overlap=3)
    np.testing.assert_allclose(weights, [1] * 7 + [0.75, 0.5, 0.25] + [0] * 6)
    np.testing.assert_array_equal(crossfade_weights(filled, generated, overlap=0), filled)
    # rows of the scan are never made again, however wide the overlap: only the earlier window's two rows fade
    wide = crossfade_weights(np.array([True] * 6 + [False] * 10), generated, overlap=8)
    np.testing.assert_allclose(wide[:6], [1, 1, 1, 1, 2 / 9, 1 / 9])


def test_later_windows_cross_fade_into_earlier_ones(tiny_bundle, monkeypatch):
    """Each window reproduces what it is given and paints its own level elsewhere, as a sampler does when it
    continues the latent but not the level that an earlier window painted: without an overlap every window
    boundary is a step, with one the level ramps from window to window."""
    levels = itertools.count()

    def paint_level(self, image, known):
        return np.where(known, image, -0.8 + 0.3 * next(levels)).astype(np.float32)

    mosaics = []
    sample = pipeline._Completer.sample
    monkeypatch.setattr(pipeline._Completer, "window", paint_level)
    monkeypatch.setattr(
        pipeline._Completer, "sample", lambda *args: mosaics.append(sample(*args)) or mosaics[-1]
    )
    scan, affine = synthetic_scan((3, 30, 24)), oblique_affine((2.0, 2.0, 2.0), 0.0)
    for overlap_mm in (0.0, 16.0):
        complete(
            scan,
            affine,
            model=tiny_bundle,
            slices=1,
            steps=1,
            extend_inferior_mm=120,
            window_overlap_mm=overlap_mm,
            match_window_brightness=False,  # the levels as painted (`window_brightness` evens them)
        )
    assert len(mosaics) == 2 and next(levels) > 6  # the 64 mm canvas needed several windows each time
    rows_past_seam = slice(-50, None)  # 100 mm below the scan, well past the 16 mm feather: only windows
    hard, soft = (np.abs(np.diff(m[0, rows_past_seam].mean(axis=1))) for m in mosaics)
    assert hard.max() == pytest.approx(0.3, abs=1e-5)
    assert soft.max() < 0.3 / 4  # 8 rows of overlap: the step spread over them


@pytest.mark.parametrize(("option", "value"), [("window_overlap_mm", float("nan")), ("feather_mm", -1.0)])
def test_a_seam_or_overlap_that_is_not_a_length_is_refused(tiny_bundle, option, value):
    with pytest.raises(InputError, match="must be a number of millimetres >= 0"):
        complete(
            synthetic_scan(), oblique_affine(), model=tiny_bundle, extend_inferior_mm=40, **{option: value}
        )


def test_the_reference_placement_is_its_centre_crop_and_symmetric_padding(tmp_path):
    """The reference cut each scan to its central 192 mm from back to front (MONAI's centre crop: from
    n // 2 - 96) and padded it symmetrically onto its canvas, (canvas - n) // 2 before: odd differences put the
    scan one row and one column higher and further back than rounding the other way."""
    from fovcompletion.bundle import CanvasSpec
    from fovcompletion.bundle_factory import create_random_bundle
    from fovcompletion.layout import reference_strip

    canvas = CanvasSpec(shape=(1280, 512), spacing_mm=(1.0, 1.0), padding_value=0.0, ap_policy="fixed")
    metadata = read_metadata(create_random_bundle(tmp_path / "b", canvas=canvas, name="ref-canvas"))
    assert reference_strip(301, 1.0) == (54, 246) and reference_strip(150, 1.0) == (0, 150)
    assert reference_strip(301, 2.0) == (102, 198)  # 192 mm at 2 mm: 96 columns
    layout = plan_layout(metadata, 301, 301, 0.0, 100.0, reference_placement=True)
    assert layout.known_cols == (54, 246)
    assert layout.col_offset + 54 == (512 - 192) // 2  # the strip's first column on the canvas
    assert layout.top == -((1280 - 301) // 2) == -489
    narrow = plan_layout(metadata, 301, 151, 0.0, 100.0, reference_placement=True)
    assert narrow.known_cols == (0, 151) and narrow.col_offset == (512 - 151) // 2

    scan = (
        np.arange(301 * 301, dtype=np.float32).reshape(1, 301, 301) + 1.0
    )  # the mosaic needs its model grid
    image, known = pipeline._mosaic(SimpleNamespace(model=scan), layout, 0.0)
    columns = np.flatnonzero(known[0].any(axis=0))
    assert (columns[0], columns[-1] + 1) == (160, 352)  # the strip alone is known, the rest is padding
    assert np.array_equal(image[0, -layout.top, 160:352], scan[0, 0, 54:246])
    assert not image[0, :, :160].any() and not image[0, :, 352:].any()


def test_the_reference_sampler_fits_the_intensities_on_the_central_strip(tiny_fixed_bundle):
    """Bright tissue outside the central 192 mm (a coil's hot spot, the back's fat) moves the reference's
    scaling not at all: its percentiles saw the strip alone. The DDIM sampler fits the whole scan."""
    from fovcompletion.image_io import Volume
    from fovcompletion.preprocess import prepare_slab

    metadata = read_metadata(tiny_fixed_bundle)  # 2 mm: the strip is 96 columns of the model grid
    scan = synthetic_scan(
        (6, 300, 40)
    )  # this affine's axes: right-left, anterior-posterior, inferior-superior
    bright = scan.copy()
    bright[:, :20] = 50 * scan.max()  # the first 20 mm from the front, far outside the central 192 mm
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    fits = [
        prepare_slab(Volume(image, affine), metadata, slices=1, fit_reference_strip=strip).scaling
        for strip in (True, False)
        for image in (scan, bright)
    ]
    assert fits[0] == fits[1]  # the strip alone
    assert fits[2] != fits[3]  # the whole scan
