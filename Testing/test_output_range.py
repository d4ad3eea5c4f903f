"""The completion never leaves the input's intensity range (an MR magnitude below the input's minimum is an error)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import synthetic_scan
from fovcompletion.bundle import load_bundle
from fovcompletion.pipeline import complete

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.mark.parametrize("shift", [-50.0, 50.0])
def test_generated_voxels_are_clipped_to_the_input_range(tiny_bundle, shift):
    """A decoder pushed far below (above) the normalised range, as a dim (glaring) model would be: without the
    clip the generated rows would lie far outside the input's range."""
    bundle = load_bundle(tiny_bundle)
    with torch.no_grad():
        bundle.autoencoder.decoder.blocks[-1].conv.bias.add_(shift)  # the last layer's output offset
    scan = synthetic_scan((6, 40, 30))
    result = complete(scan, AFFINE, model=bundle, slices=2, steps=2, extend_inferior_mm=24)
    low, high = float(scan.min()), float(scan.max())
    known = result.mask.astype(bool)
    assert result.image.min() >= low and result.image.max() <= high
    limit = low if shift < 0 else high
    assert np.mean(result.image[~known] == limit) > 0.9  # the generated voxels were clipped, not untouched
    chosen = scan[result.slice_indices]
    assert np.array_equal(result.image[known].reshape(-1), chosen.reshape(-1))  # the known part is the input
