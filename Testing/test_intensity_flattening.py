"""Superior-inferior gain flattening: a receive-coil falloff is divided out before the networks see a scan,
the known rows map back to the scan exactly, and rows past the scan get the gain of its edge."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from training_helpers import LIA_AFFINE

from conftest import synthetic_scan
from fovcompletion import pipeline
from fovcompletion.bundle import IntensitySpec, read_metadata
from fovcompletion.errors import BundleError
from fovcompletion.image_io import Volume
from fovcompletion.intensity import row_gain
from fovcompletion.pipeline import complete
from fovcompletion.preprocess import prepare_slab
from fovcompletion.training.config import config_from_dict, preset_config

MODEL_ORIENTED = LIA_AFFINE  # the model's own axis order at 1 mm: axis 1 runs from superior to inferior


def coil_falloff(rows: int) -> np.ndarray:
    """Flat over the first 60% of the rows, then fading linearly to 0.3 at the inferior edge."""
    position = np.arange(rows) / (rows - 1)
    return np.where(position < 0.6, 1.0, 1.0 - 0.7 * (position - 0.6) / 0.4).astype(np.float32)


def bright_level(slab: np.ndarray, rows: slice) -> float:
    return float(np.percentile(slab[:, rows], 95))


def flattened_bundle(source, target, sigma_mm: float = 30.0):
    shutil.copytree(source, target)
    metadata = json.loads((target / "bundle.json").read_text())
    metadata["intensity"]["flatten_sigma_mm"] = sigma_mm
    (target / "bundle.json").write_text(json.dumps(metadata))
    return target


def test_row_gain_holds_still_past_the_anatomy():
    faded = synthetic_scan((5, 120, 40)) * coil_falloff(120)[None, :, None]
    faded[:, -12:] = 0  # the scan's last rows are empty
    gain = row_gain(faded, 1.0, 30.0)
    assert np.all(gain[-12:] == gain[-13])
    assert gain[-13] == pytest.approx(coil_falloff(120)[-13] / np.median(coil_falloff(120)[:-12]), abs=0.12)


def test_row_gain_recovers_a_coil_falloff_and_leaves_a_flat_scan_alone():
    scan = synthetic_scan((5, 120, 40))
    falloff = coil_falloff(120)
    faded = scan * falloff[None, :, None]
    flat_gain = row_gain(scan, 1.0, 30.0)
    assert np.all(np.abs(flat_gain - 1) < 0.1)
    gain = row_gain(faded, 1.0, 30.0)
    ratio = gain[-10:].mean() / gain[:40].mean()
    assert ratio == pytest.approx(falloff[-10:].mean(), abs=0.1)
    flattened = faded / gain[None, :, None]
    assert bright_level(flattened, slice(-15, None)) / bright_level(flattened, slice(0, 40)) > 0.85
    assert bright_level(faded, slice(-15, None)) / bright_level(faded, slice(0, 40)) < 0.5


def test_prepared_slab_is_flattened_only_when_the_bundle_asks(tiny_bundle, tmp_path):
    faded = synthetic_scan((5, 120, 40)) * coil_falloff(120)[None, :, None]
    volume = Volume(faded, MODEL_ORIENTED)
    plain = prepare_slab(volume, read_metadata(tiny_bundle), slices=3)
    assert np.all(plain.gain == 1)
    metadata = read_metadata(flattened_bundle(tiny_bundle, tmp_path / "flat"))
    slab = prepare_slab(volume, metadata, slices=3)
    bottom, top = slice(-8, None), slice(0, 20)  # model grid: 2 mm, 60 rows
    fade = bright_level(plain.model, bottom) - bright_level(plain.model, top)
    assert fade < -0.6  # in model units (range 2)
    assert bright_level(slab.model, bottom) - bright_level(slab.model, top) > 0.25 * fade
    # Known rows go to model units and back to the scan's (up to float rounding; above the upper
    # percentile the normalisation clips, and the pipeline pastes the scan's own voxels back anyway).
    rows = slab.native.shape[1]
    padded = np.zeros((3, rows + 30, 40), np.float32)
    padded[:, 10 : 10 + rows] = slab.normalised_native()
    back = slab.to_scanner_units(padded, rows_above=10)[:, 10 : 10 + rows]
    unclipped = padded[:, 10 : 10 + rows] < metadata.intensity.out_max
    assert unclipped.mean() > 0.9
    np.testing.assert_allclose(back[unclipped], slab.native[unclipped], rtol=1e-4, atol=1e-2)
    # Rows past the scan take the gain of its nearest edge: a dim inferior edge stays dim.
    ones = np.full_like(padded, 0.5)
    scaled = slab.to_scanner_units(ones, rows_above=10)
    assert scaled[0, -1, 0] / scaled[0, 0, 0] == pytest.approx(slab.gain[-1] / slab.gain[0], rel=1e-5)


def test_flattened_completion_keeps_the_known_voxels(tiny_bundle, tmp_path):
    faded = synthetic_scan((5, 60, 32)) * coil_falloff(60)[None, :, None]
    folder = flattened_bundle(tiny_bundle, tmp_path / "flat")
    result = complete(faded, MODEL_ORIENTED, model=folder, slices=3, steps=2, extend_inferior_mm=20)
    assert result.image.shape == (3, 80, 32)
    np.testing.assert_array_equal(result.image[:, :60], faded[1:4])
    assert np.isfinite(result.image).all()


def test_generated_rows_get_the_gain_of_the_scan_edge(tiny_bundle, tmp_path, monkeypatch):
    """With a sampler that leaves the padding as it is, the rows beyond the seam's feather hold the
    padding value in model units, so they show exactly the gain that comes back onto generated rows."""
    faded = synthetic_scan((5, 80, 32)) * coil_falloff(80)[None, :, None]

    def keep_padding(self, slab, layout, feather_px, overlap_px, match_brightness):
        return pipeline._mosaic(slab, layout, self.bundle.metadata.canvas.padding_value)[0]

    monkeypatch.setattr(pipeline._Completer, "sample", keep_padding)
    for folder in (tiny_bundle, flattened_bundle(tiny_bundle, tmp_path / "flat")):
        slab = prepare_slab(Volume(faded, MODEL_ORIENTED), read_metadata(folder), slices=3)
        result = complete(faded, MODEL_ORIENTED, model=folder, slices=3, steps=1, extend_inferior_mm=40)
        far = result.image[:, -10:]  # 30-40 mm past the seam, beyond the 16 mm feather
        expected = slab.scaling.denormalise(np.float32(-1.0)) * slab.gain[-1]
        np.testing.assert_allclose(far, expected, rtol=1e-5)
    assert slab.gain[-1] < 0.5  # the flattened case: the faded edge's gain, not the scan's median


def test_bundles_and_configurations_without_the_setting_keep_the_scan_profile(tiny_bundle, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(tiny_bundle, folder)
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["intensity"].pop("flatten_sigma_mm")
    (folder / "bundle.json").write_text(json.dumps(metadata))
    assert read_metadata(folder).intensity == IntensitySpec()
    for bad in (-5, float("nan")):
        metadata["intensity"]["flatten_sigma_mm"] = bad
        (folder / "bundle.json").write_text(json.dumps(metadata))
        with pytest.raises(BundleError, match="flatten_sigma_mm"):
            read_metadata(folder)
    chosen = preset_config("default")
    chosen.data.flatten_sigma_mm = 30.0
    assert chosen.preprocessing_metadata().intensity.flatten_sigma_mm == 30.0
    written_before = chosen.to_dict()
    written_before["data"].pop("flatten_sigma_mm")
    assert config_from_dict(written_before).data.flatten_sigma_mm == 0
    assert (
        preset_config("default").data.flatten_sigma_mm
        == preset_config("reference").data.flatten_sigma_mm
        == 0
    )
