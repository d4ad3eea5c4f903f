"""From a volume in any orientation to normalised sagittal slices on the model's grid.

Training and inference both call `prepare_slab`, so the model always sees data prepared one way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arguments import is_whole_number
from .bundle import BundleMetadata
from .errors import InputError
from .geometry import (
    MODEL_AXCODES,
    check_sagittal_extent,
    check_sagittal_resolution,
    original_axis_index,
    reorient,
    resample_inplane,
)
from .image_io import Volume
from .intensity import IntensityScaling, divide_gain, row_gain
from .layout import reference_strip


@dataclass
class PreparedSlab:
    """Chosen sagittal slices, in model orientation, at native and at model in-plane spacing.

    `native` holds the scan's own samples (float32, computed with) and `exact` the same at the input's own
    precision, for the exact paste-back (float64 for data float32 cannot hold); `model` is what the networks see.
    `native_affine` maps native voxel indices of the slab to RAS; `model_to_native` maps model-grid
    indices to native-slab indices. `gain` is the superior-inferior gain divided out before normalisation
    (one value per native row; all ones unless the bundle flattens it).
    """

    native: np.ndarray
    exact: np.ndarray
    native_affine: np.ndarray
    model: np.ndarray
    model_to_native: np.ndarray
    scaling: IntensityScaling
    slice_indices: np.ndarray  # indices of the chosen slices along the input's own left-right axis
    gain: np.ndarray

    @property
    def native_spacing(self) -> np.ndarray:
        return np.linalg.norm(self.native_affine[:3, :3], axis=0)

    def normalised_native(self) -> np.ndarray:
        """The native slab in the model's intensity units (gain divided out, then scaled)."""
        return self.scaling.normalise(divide_gain(self.native, self.gain))

    def gain_over(self, rows_above: int, n_rows: int) -> np.ndarray:
        """The gain of `n_rows` native rows starting `rows_above` rows above the slab: rows past either end get
        the gain of that end."""
        return np.pad(self.gain, (rows_above, n_rows - rows_above - self.gain.size), mode="edge")

    def to_scanner_units(self, values: np.ndarray, rows_above: int) -> np.ndarray:
        """Model units back to the scan's, for native rows starting `rows_above` rows above the slab, so the
        completion meets the scan at its own brightness."""
        gain = self.gain_over(rows_above, values.shape[1])
        return self.scaling.denormalise(values) * gain[None, :, None]


def max_inplane_spacing_mm(metadata: BundleMetadata | None) -> float:
    """Coarsest superior-inferior/anterior-posterior sampling we accept: thick slices cannot be completed
    (None: no model chosen, the limit every model shares)."""
    return max(3.0, 1.5 * max(metadata.canvas.spacing_mm)) if metadata is not None else 3.0


def check_slice_choice(slices: int | None, slice_range: tuple[int, int] | None) -> None:
    """Refuse a choice of slices that cannot mean one thing, before any model loads: both a count and a range
    (the command line makes them exclusive; the API used to keep the range silently), or numbers that are not
    whole."""
    if slices is not None and slice_range is not None:
        raise InputError("give a number of slices or a slice range, not both")
    if slices is not None and not is_whole_number(slices):
        raise InputError(f"the number of slices must be a whole number (got {slices!r})")
    if slice_range is not None and not (
        isinstance(slice_range, (tuple, list))
        and len(slice_range) == 2
        and all(map(is_whole_number, slice_range))
    ):
        raise InputError(f"the slice range must be two whole numbers, start and end (got {slice_range!r})")


def check_slice_range(start: int, stop: int, n_slices: int) -> None:
    """Refuse an empty or reversed range first (a typo, not a place), then one that leaves the scan."""
    if start >= stop:
        raise InputError(
            f"slice range {start}:{stop} is empty: the start must be below the end (end excluded)"
        )
    if start < 0 or stop > n_slices:
        raise InputError(
            f"slice range {start}:{stop} is outside the scan's {n_slices} sagittal slices (0:{n_slices})"
        )


def select_slices(
    n_slices: int, count: int | None = None, index_range: tuple[int, int] | None = None
) -> tuple[int, int]:
    """[start, stop) in model orientation: `count` slices centred on the middle, or an explicit range.

    `count=None` means one slice; 0 is refused like any other count below 1, never taken as a default.
    """
    if index_range is not None:
        start, stop = index_range
        check_slice_range(start, stop, n_slices)
        return start, stop
    count = 1 if count is None else count
    if count < 1:
        raise InputError(f"the number of slices must be between 1 and {n_slices} (got {count})")
    if count > n_slices:
        raise InputError(f"{count} slices requested but the scan has only {n_slices} sagittal slices")
    start = n_slices // 2 - count // 2
    return start, start + count


def prepare_slab(
    volume: Volume,
    metadata: BundleMetadata,
    slices: int | None = None,
    slice_range: tuple[int, int] | None = None,
    intensity: tuple[IntensityScaling, np.ndarray] | None = None,
    fit_reference_strip: bool = False,
) -> PreparedSlab:
    """Reorient, check, pick slices, resample to the model spacing and normalise intensities.

    `slice_range` counts along the input's own left-right axis (as a viewer shows it), end excluded.
    `intensity` = (scaling, gain of each superior-inferior row) to apply instead of fitting them to this volume:
    the benchmark's ceiling rows put a whole truth through the normalisation the engine fitted to its visible
    part. `fit_reference_strip`: fit the scaling as the reference did, on the model grid's central strip
    (`layout.reference_strip`) alone.
    """
    array, affine = reorient(volume.array, volume.affine, MODEL_AXCODES)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    check_sagittal_extent(array.shape)
    check_sagittal_resolution(spacing, max_inplane_spacing_mm(metadata))
    n_slices = array.shape[0]
    lr_axis, flipped = original_axis_index(volume.affine, 0)
    model_range = None
    if slice_range is not None:
        start, stop = slice_range
        check_slice_range(start, stop, volume.array.shape[lr_axis])
        model_range = (n_slices - stop, n_slices - start) if flipped else (start, stop)
    count = min(metadata.default_slices, n_slices) if slices is None else slices  # not asked: what there is
    start, stop = select_slices(n_slices, count, model_range)
    exact = array[start:stop]
    native = exact.astype(np.float32)
    shift = np.eye(4)
    shift[0, 3] = start
    native_affine = affine @ shift
    sigma = metadata.intensity.flatten_sigma_mm
    if intensity is not None:
        scaling, gain = intensity[0], np.asarray(intensity[1], dtype=np.float32)
    elif sigma > 0:
        gain = row_gain(native, spacing[1], sigma)
    else:
        gain = np.ones(native.shape[1], np.float32)
    flattened = divide_gain(native, gain)
    model, model_to_native = resample_inplane(flattened, spacing, metadata.canvas.spacing_mm)
    if intensity is None and fit_reference_strip:
        first, last = reference_strip(model.shape[2], metadata.canvas.spacing_mm[1])
        scaling = IntensityScaling.fit(model[:, :, first:last], metadata.intensity)
    elif intensity is None:
        scaling = IntensityScaling.fit(flattened, metadata.intensity)
    indices = np.arange(start, stop)
    input_indices = (n_slices - 1 - indices) if flipped else indices
    return PreparedSlab(
        native=native,
        exact=exact,
        native_affine=native_affine,
        model=scaling.normalise(model),
        model_to_native=model_to_native,
        scaling=scaling,
        slice_indices=np.sort(input_indices),
        gain=gain,
    )
