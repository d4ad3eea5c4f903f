"""The geometry claim: laid over the input in world space, the output's known region is the input, voxel for voxel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from conftest import oblique_affine, synthetic_scan, write_nifti
from fovcompletion.errors import InputError
from fovcompletion.geometry import axcodes_of
from fovcompletion.pipeline import complete, complete_file


def world_to_input_index(
    input_affine: np.ndarray, output_affine: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    homogeneous = np.c_[indices, np.ones(len(indices))]
    return (np.linalg.inv(input_affine) @ output_affine @ homogeneous.T).T[:, :3]


@pytest.mark.parametrize(
    ("spacing", "angle", "flips"),
    [
        ((1.0, 1.0, 1.0), 0.0, (1, 1, 1)),
        ((0.8, 1.2, 0.9), 17.0, (1, 1, 1)),
        ((1.0, 0.9, 1.1), -9.0, (-1, -1, 1)),
    ],
)
def test_known_region_lies_exactly_over_the_input(tiny_bundle, tmp_path, spacing, angle, flips):
    scan = synthetic_scan((7, 45, 33))
    affine = oblique_affine(spacing, angle, flips)
    source = write_nifti(tmp_path / "in.nii.gz", scan, affine)
    result = complete_file(
        source,
        tmp_path / "out.nii.gz",
        mask_path=tmp_path / "mask.nii.gz",
        model=tiny_bundle,
        slices=3,
        steps=3,
        extend_superior_mm=20,
        extend_inferior_mm=30,
    )
    written = nib.load(str(tmp_path / "out.nii.gz"))
    mask = np.asarray(nib.load(str(tmp_path / "mask.nii.gz")).dataobj) > 0
    np.testing.assert_allclose(written.affine, result.affine, atol=1e-4)
    assert axcodes_of(written.affine) == axcodes_of(affine)
    np.testing.assert_allclose(np.linalg.norm(written.affine[:3, :3], axis=0), spacing, atol=1e-5)
    known = np.argwhere(mask)
    assert len(known) == 3 * scan.shape[1] * scan.shape[2]
    positions = world_to_input_index(affine, written.affine, known)
    np.testing.assert_allclose(positions, np.round(positions), atol=1e-3)
    source_idx = np.round(positions).astype(int)
    np.testing.assert_allclose(
        np.asarray(written.dataobj)[tuple(known.T)], scan[tuple(source_idx.T)], rtol=1e-5
    )
    # the three chosen slices are the central ones of the input's left-right axis
    assert sorted(set(source_idx[:, 0])) == [2, 3, 4]


@pytest.mark.parametrize("kind", ["float64", "int32", "scale factor"])
def test_known_voxels_keep_a_precision_float32_cannot_hold(tiny_bundle, tmp_path, kind):
    """float64 data, int32 values past 2**24 and NIfTI scale factors come back exactly, not to float32's
    rounding (written as float64); the usual int16 scans stay float32."""
    scan = synthetic_scan((3, 30, 24)).astype(np.float64)
    if kind == "float64":
        data = scan + np.random.default_rng(0).random(scan.shape) * 1e-4
    elif kind == "int32":
        data = (scan * 1000 + 20_000_001).astype(np.int32)  # odd values above 2**24
    else:
        data = scan.astype(np.int16)
    source = tmp_path / "in.nii"
    image = nib.Nifti1Image(data, oblique_affine((1.0, 1.0, 1.0), 0.0))
    if kind == "scale factor":
        image.header.set_slope_inter(0.1234567, 0.0)
    nib.save(image, source)
    given = np.asanyarray(nib.load(str(source)).dataobj)
    result = complete_file(
        source, tmp_path / "out.nii", model=tiny_bundle, slices=3, steps=2, extend_inferior_mm=20
    )
    written = np.asanyarray(nib.load(str(tmp_path / "out.nii")).dataobj)
    assert written.dtype == np.float64 and result.image.dtype == np.float64
    np.testing.assert_array_equal(written[:, : given.shape[1]], given)
    assert (
        complete(
            scan.astype(np.int16),
            oblique_affine((1.0, 1.0, 1.0), 0.0),
            model=tiny_bundle,
            slices=1,
            steps=2,
            extend_inferior_mm=20,
        ).image.dtype
        == np.float32
    )


def test_extension_goes_the_requested_way_in_world_space(tiny_bundle):
    scan = synthetic_scan((5, 40, 30))
    affine = oblique_affine((1.0, 1.0, 1.0), 0.0)
    result = complete(scan, affine, model=tiny_bundle, slices=1, steps=2, extend_inferior_mm=24)
    corners_in = affine @ np.array([[0, 0, 0, 1], [0, 39, 0, 1]]).T
    lowest_out = min((result.affine @ np.array([[0, j, 0, 1] for j in (0, result.image.shape[1] - 1)]).T)[2])
    assert np.isclose(lowest_out, corners_in[2].min() - 24, atol=1e-6)
    top_out = max((result.affine @ np.array([[0, j, 0, 1] for j in (0, result.image.shape[1] - 1)]).T)[2])
    assert np.isclose(top_out, corners_in[2].max())
    assert result.image.shape == (1, 64, 30)


def test_a_scan_with_fewer_slices_than_the_models_default_completes_them_all(tiny_bundle):
    """Slices not asked for: the model's default (5) where the scan has them, else every slice it has; a count
    asked for and not there is still refused."""
    scan = synthetic_scan((2, 30, 24))
    affine = oblique_affine((1.0, 1.0, 1.0), 0.0)
    result = complete(scan, affine, model=tiny_bundle, steps=2, extend_inferior_mm=20)
    assert result.image.shape[0] == 2 and list(result.slice_indices) == [0, 1]
    with pytest.raises(InputError, match="3 slices requested but the scan has only 2"):
        complete(scan, affine, model=tiny_bundle, slices=3, steps=2, extend_inferior_mm=20)


def test_isotropic_axially_stored_scan_is_resliced(tiny_bundle):
    scan = synthetic_scan((30, 28, 36))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])  # RAS: axis 2 superior, i.e. stored as axial slices
    result = complete(scan, affine, model=tiny_bundle, slices=2, steps=2, extend_superior_mm=10)
    assert axcodes_of(result.affine) == ("R", "A", "S")
    assert result.image.shape == (2, 28, 46)


def test_axial_thick_slice_scan_is_refused(tiny_bundle):
    scan = synthetic_scan((256, 256, 24))
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    with pytest.raises(InputError, match="axial thick-slice"):
        complete(scan, affine, model=tiny_bundle, steps=2, extend_inferior_mm=20)


def test_slice_range_counts_along_the_input_axis_even_when_flipped(tiny_bundle):
    scan = synthetic_scan((8, 40, 30))
    scan[5] += 1000  # mark input slice 5
    for flip in (1, -1):
        affine = oblique_affine((1.0, 1.0, 1.0), 0.0, (flip, 1, 1))
        result = complete(scan, affine, model=tiny_bundle, slice_range=(5, 6), steps=2, extend_inferior_mm=10)
        assert list(result.slice_indices) == [5]
        assert result.image[0][result.mask[0] > 0].mean() > 1000


@pytest.mark.parametrize(
    ("choice", "match"),
    [
        ({"slices": 0}, r"between 1 and 8 \(got 0\)"),
        ({"slices": -2}, r"between 1 and 8 \(got -2\)"),
        ({"slice_range": (5, 2)}, "start must be below the end"),
        ({"slice_range": (4, 4)}, "start must be below the end"),
        ({"slice_range": (-1, 3)}, "outside the scan's 8 sagittal slices"),
    ],
)
def test_zero_slices_and_empty_ranges_are_refused_not_defaulted(tiny_bundle, choice, match):
    scan = synthetic_scan((8, 40, 30))
    with pytest.raises(InputError, match=match):
        complete(scan, oblique_affine(), model=tiny_bundle, steps=2, extend_inferior_mm=10, **choice)


def test_constant_chosen_slices_are_refused(tiny_bundle):
    scan = synthetic_scan((9, 40, 30))
    scan[3:6] = 0.0  # e.g. zero-padded slices
    with pytest.raises(InputError, match="chosen slices are constant"):
        complete(scan, oblique_affine(), model=tiny_bundle, slices=3, steps=2, extend_inferior_mm=10)
