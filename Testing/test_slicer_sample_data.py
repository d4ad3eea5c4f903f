"""The offline sample: the engine's cervical phantom as a volume node and as a file Slicer can load."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from FOVCompletionLib.known_region import sameImageInWorld
from FOVCompletionLib.sample_data import PHANTOM_FILE_NAME, phantomVolumeNode, writePhantomFile
from FOVCompletionLib.volume_files import readVolumeFromFile
from FOVCompletionLib.volume_geometry import arrayAndAffineFromVolume, extentAlongMm, sagittalSliceCount

phantom = pytest.importorskip("fovcompletion.phantom")
SPACING = 2.0  # coarser than the sample's 1 mm, to keep the test fast


def test_phantom_node_has_the_phantom_geometry():
    scene = slicer.vtkMRMLScene()
    node = phantomVolumeNode(scene, region="cervical", seed=3, spacingMm=SPACING)
    expected = phantom.crop_phantom(phantom.generate_phantom(seed=3, spacing_mm=SPACING), "cervical")
    array, affine = arrayAndAffineFromVolume(node)
    np.testing.assert_allclose(affine, expected.affine)
    np.testing.assert_array_equal(array, np.round(expected.image).astype(np.int16))
    assert node.GetDisplayNode() is not None
    assert sagittalSliceCount(node) == expected.image.shape[0]
    assert 100 < extentAlongMm(node, "S") < 300  # a cervical field of view, not the whole spine


def test_phantom_file_loads_with_the_same_world_geometry(tmp_path):
    path = writePhantomFile(tmp_path / "cache" / PHANTOM_FILE_NAME, seed=3, spacingMm=SPACING)
    assert sorted(p.name for p in path.parent.iterdir()) == [PHANTOM_FILE_NAME]  # no partial file left
    node = readVolumeFromFile(slicer.vtkMRMLScene(), path, "phantom")
    direct = phantomVolumeNode(slicer.vtkMRMLScene(), seed=3, spacingMm=SPACING)
    loaded_array, loaded_affine = arrayAndAffineFromVolume(node)
    direct_array, direct_affine = arrayAndAffineFromVolume(direct)
    assert sameImageInWorld(direct_array, direct_affine, loaded_array, loaded_affine)
