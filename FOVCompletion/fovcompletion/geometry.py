"""Voxel geometry: reorient to the model's axis convention, resample in-plane, and keep every step's
voxel-to-world matrix exact so that the output lies over the input in world space."""

from __future__ import annotations

import warnings

import numpy as np
from nibabel import orientations as ornt

from .errors import InputError

MODEL_AXCODES = ("L", "I", "A")  # axis 0 left-right (slices), axis 1 superior->inferior, axis 2 anterior


def axcodes_of(affine: np.ndarray) -> tuple[str, str, str]:
    return tuple(ornt.aff2axcodes(affine))  # type: ignore[return-value]


def reorient(
    array: np.ndarray, affine: np.ndarray, axcodes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip axes (no interpolation) so the array's axes point along `axcodes`; world stays the same."""
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(axcodes))
    reoriented = ornt.apply_orientation(array, transform)
    return np.ascontiguousarray(reoriented), affine @ ornt.inv_ornt_aff(transform, array.shape)


def original_axis_index(affine: np.ndarray, model_axis: int) -> tuple[int, bool]:
    """Which input axis becomes `model_axis`, and whether it is flipped on the way."""
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(MODEL_AXCODES))
    for input_axis, (target_axis, flip) in enumerate(transform):
        if int(target_axis) == model_axis:
            return input_axis, flip < 0
    raise AssertionError("orientation transform is not a permutation")


def check_sagittal_resolution(spacing_lia: np.ndarray, max_inplane_mm: float) -> None:
    """Refuse scans whose superior-inferior or anterior-posterior sampling is too coarse (e.g. axial thick slices)."""
    s_si, s_ap = float(spacing_lia[1]), float(spacing_lia[2])
    if s_si > max_inplane_mm:
        raise InputError(
            f"input looks like an axial thick-slice scan ({s_si:.1f} mm between samples superior-inferior, "
            f"at most {max_inplane_mm:.1f} mm usable); provide a sagittal or isotropic acquisition"
        )
    if s_ap > max_inplane_mm:
        raise InputError(
            f"input looks like a coronal thick-slice scan ({s_ap:.1f} mm between samples anterior-posterior, "
            f"at most {max_inplane_mm:.1f} mm usable); provide a sagittal or isotropic acquisition"
        )


def check_sagittal_extent(shape_lia: tuple[int, ...]) -> None:
    """Refuse a 2D image stored as a volume one voxel thick (a single axial or coronal image, as Slicer saves a
    2D image): its spacing passes `check_sagittal_resolution`, but one row is no scan to extend."""
    for axis, plane, direction in ((1, "axial", "superior-inferior"), (2, "coronal", "anterior-posterior")):
        if shape_lia[axis] < 2:
            raise InputError(
                f"input is a single {plane} image (one sample {direction}); a 3D sagittal volume is required"
            )


def index_transform(scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """4x4 map from new voxel indices to old ones: old = scale * new + offset (per axis)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag(scale)
    matrix[:3, 3] = offset
    return matrix


def resampled_grid(n: int, spacing: float, target: float) -> tuple[int, float, float]:
    """Size, step and offset (in old indices) of a centred grid at `target` spacing covering `n` samples."""
    size = max(1, int(round(n * spacing / target)))
    step = target / spacing
    offset = ((n - 1) - (size - 1) * step) / 2.0
    return size, step, offset


def resample_inplane(
    array: np.ndarray, spacing_lia: np.ndarray, target_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample axes 1 and 2 to `target_mm` (axis 0, the slices, untouched); returns the array and old<-new map.

    Downsampling is anti-aliased with a Gaussian so that coarse model grids see no stair-case artefacts.
    """
    from scipy import ndimage

    sizes, steps, offsets = [array.shape[0]], [1.0], [0.0]
    for axis, target in ((1, target_mm[0]), (2, target_mm[1])):
        size, step, offset = resampled_grid(array.shape[axis], float(spacing_lia[axis]), float(target))
        sizes.append(size)
        steps.append(step)
        offsets.append(offset)
    sigma = [0.0] + [0.5 * (s - 1.0) if s > 1.0 else 0.0 for s in steps[1:]]
    smoothed = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest") if any(sigma) else array
    mapping = index_transform(np.array(steps), np.array(offsets))
    if np.allclose(steps, 1.0) and np.allclose(offsets, 0.0):
        return smoothed.astype(np.float32, copy=True), mapping
    with warnings.catch_warnings():
        # SciPy < 1.14 (Python 3.9's) notes on every call that a 1-D matrix means a diagonal one since 0.18:
        # that is what we mean, and the note would land in every user's log.
        warnings.filterwarnings("ignore", message="The behavior of affine_transform with a 1-D array")
        resampled = ndimage.affine_transform(
            smoothed,
            np.array(steps),
            offset=np.array(offsets),
            output_shape=tuple(sizes),
            order=1,
            mode="nearest",
        )
    return resampled.astype(np.float32), mapping


def sample_at(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample each 2D slice of `image` (slices, rows, cols) at a grid of fractional (rows x cols) positions."""
    from scipy import ndimage

    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    return np.stack(
        [ndimage.map_coordinates(plane, [grid_r, grid_c], order=order, mode="nearest") for plane in image]
    ).astype(np.float32)
