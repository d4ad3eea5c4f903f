"""The self-test's check that a completion keeps the input: grid alignment and voxel equality in the mask."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from conftest import oblique_affine
from FOVCompletionLib.known_region import checkKnownRegion, isGridAligned
from FOVCompletionLib.volume_geometry import setVolumeFromArrayAndAffine

AFFINE = oblique_affine((0.9, 1.2, 1.0), 10.0)
ABOVE = 4  # rows added above the input


def nodes(output_shift_rows=ABOVE, corrupt=False, half_voxel=False):
    """Input (5 x 10 x 6); output: 3 central slices extended by ABOVE rows above and 3 below."""
    scene = slicer.vtkMRMLScene()
    rng = np.random.default_rng(0)
    source = rng.integers(0, 500, size=(5, 10, 6)).astype(np.int16)
    input_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    setVolumeFromArrayAndAffine(input_node, source, AFFINE)
    output = rng.normal(size=(3, 10 + ABOVE + 3, 6)).astype(np.float32)
    output[:, ABOVE : ABOVE + 10] = source[1:4]
    if corrupt:
        output[1, ABOVE + 2, 3] += 50
    mask = np.zeros(output.shape, dtype=np.uint8)
    mask[:, ABOVE : ABOVE + 10] = 1
    shift = np.eye(4)
    shift[:3, 3] = [1, -output_shift_rows + (0.5 if half_voxel else 0.0), 0]
    out_affine = AFFINE @ shift
    output_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    setVolumeFromArrayAndAffine(output_node, output, out_affine)
    mask_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    setVolumeFromArrayAndAffine(mask_node, mask, out_affine)
    return input_node, output_node, mask_node


def test_faithful_completion_reproduces_input():
    check = checkKnownRegion(*nodes())
    assert check.gridAligned and check.outsideInput == 0
    assert check.knownVoxels == 3 * 10 * 6
    assert check.maximumDifference == 0.0
    assert check.reproducesInput()


def test_changed_known_voxel_is_caught():
    check = checkKnownRegion(*nodes(corrupt=True))
    assert check.maximumDifference == pytest.approx(50, abs=1e-3)
    assert not check.reproducesInput()


def test_misplaced_output_is_caught():
    shifted = checkKnownRegion(*nodes(output_shift_rows=ABOVE + 2))  # the known rows land 2 rows off
    assert not shifted.reproducesInput()
    half = checkKnownRegion(*nodes(half_voxel=True))
    assert not half.gridAligned and not half.reproducesInput()


def test_reversed_axis_is_still_aligned():
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = 9
    assert isGridAligned(flip)
    assert not isGridAligned(np.diag([1.0, 0.5, 1.0, 1.0]))  # different spacing needs resampling
