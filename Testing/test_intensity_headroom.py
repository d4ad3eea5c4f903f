"""Intensity normalisation with headroom (the v1 recipe): the 99.5th percentile maps to 1, bright tissue above
it keeps its contrast instead of being capped, and the map back to scanner units is exact."""

from __future__ import annotations

import numpy as np
from training_helpers import LIA_AFFINE

from conftest import synthetic_scan
from fovcompletion.bundle import IntensitySpec
from fovcompletion.image_io import Volume
from fovcompletion.intensity import IntensityScaling
from fovcompletion.preprocess import prepare_slab
from fovcompletion.training.config import config_from_dict, preset_config


def bright_canal_scan(columns: int) -> np.ndarray:
    """A scan with a CSF-filled canal `columns` of 40 columns wide, well above the rest of the tissue."""
    scan = synthetic_scan(shape=(7, 60, 40), seed=4)
    scan[:, :, 18 : 18 + columns] = 3000.0 + np.linspace(0, 500, 60)[None, :, None]
    return scan


def test_headroom_round_trips_and_never_clips_the_input_range():
    spec = preset_config("v1").intensity_spec()
    assert (spec.lower_percentile, spec.upper_percentile, spec.clip) == (0.0, 95.0, False)
    scan = bright_canal_scan(columns=1)  # 2.5% of the voxels: above the reference's 95th percentile
    scaling = IntensityScaling.fit(scan, spec)
    normalised = scaling.normalise(scan)
    assert normalised.min() == -1.0  # the darkest voxel (the 0th percentile)
    assert normalised.max() > 1.0  # the brightest canal voxels keep their headroom above 1
    back = scaling.denormalise(normalised)
    np.testing.assert_allclose(back, scan, rtol=1e-5, atol=1e-3)
    assert back.min() >= scan.min() - 1e-3 and back.max() <= scan.max() + 1e-3
    # the canal's own contrast survives: the reference's cap at the 95th percentile flattens it to one value
    canal = normalised[:, :, 18]
    assert canal.max() - canal.min() > 0.05
    capped = IntensityScaling.fit(scan, IntensitySpec()).normalise(scan)[:, :, 18]
    assert capped.max() - capped.min() == 0.0


def test_prepared_slab_keeps_bright_tissue_and_older_configs_keep_the_reference_cap():
    metadata = preset_config("v1").preprocessing_metadata()
    slab = prepare_slab(Volume(bright_canal_scan(columns=4), LIA_AFFINE), metadata, slices=5)
    assert slab.normalised_native().max() > 1.0 and slab.model.max() > 0.8  # the canal stays bright
    np.testing.assert_allclose(slab.to_scanner_units(slab.normalised_native(), 0), slab.native, rtol=1e-5)
    old = config_from_dict({"data": {"roots": []}})  # written before the intensity keys existed
    assert old.intensity_spec() == IntensitySpec()
