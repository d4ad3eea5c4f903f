"""MRML volume node <-> engine array + affine: axis order, oblique and flipped directions, world positions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from conftest import oblique_affine
from FOVCompletionLib.volume_geometry import (
    arrayAndAffineFromVolume,
    axisClosestTo,
    extentAlongMm,
    firstScalarVolume,
    ijkToRas,
    middleSliceCentreRas,
    sagittalSliceCount,
    setVolumeFromArrayAndAffine,
    toWorld,
    vtkMatrixFromArray,
)

GEOMETRIES = {
    "oblique": oblique_affine((0.8, 1.1, 3.0), 12.0),
    "flipped": oblique_affine((0.8, 1.1, 3.0), -7.0, flips=(-1, 1, -1)),
    "axis-aligned RAS": np.diag([0.5, 0.7, 2.0, 1.0]),
}


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


def volume(scene, array: np.ndarray, affine: np.ndarray):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    setVolumeFromArrayAndAffine(node, array, affine)
    return node


@pytest.mark.parametrize("name", GEOMETRIES)
def test_round_trip_keeps_voxels_and_affine(scene, name):
    affine = GEOMETRIES[name]
    array = np.random.default_rng(0).normal(size=(4, 6, 5)).astype(np.float32)
    node = volume(scene, array, affine)
    back, backAffine = arrayAndAffineFromVolume(node)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(backAffine, affine, atol=1e-12)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_engine_index_ijk_is_mrml_ijk(scene, name):
    """array[i, j, k] is the voxel Slicer calls (i, j, k), at affine @ (i, j, k) in RAS."""
    affine = GEOMETRIES[name]
    array = np.zeros((4, 6, 5), dtype=np.float32)
    array[3, 1, 2] = 7.0
    node = volume(scene, array, affine)
    assert node.GetImageData().GetScalarComponentAsDouble(3, 1, 2, 0) == 7.0
    assert node.GetImageData().GetDimensions() == (4, 6, 5)
    rasToIjk = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(rasToIjk)
    ras = affine @ np.array([3, 1, 2, 1.0])
    np.testing.assert_allclose(rasToIjk.MultiplyPoint(list(ras))[:3], [3, 1, 2], atol=1e-9)


def test_mrml_array_is_k_j_i(scene):
    array = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    node = volume(scene, array, np.eye(4))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array.transpose(2, 1, 0))


def test_rejects_non_3d(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(ValueError, match="3D"):
        setVolumeFromArrayAndAffine(node, np.zeros((3, 3)), np.eye(4))
    with pytest.raises(ValueError, match="image data"):
        arrayAndAffineFromVolume(node)


def test_sagittal_axis_count_and_height(scene):
    # oblique_affine: axis 0 -> left-right, axis 1 -> superior-inferior, axis 2 -> anterior-posterior
    affine = GEOMETRIES["flipped"]
    node = volume(scene, np.zeros((4, 6, 5), dtype=np.float32), affine)
    assert (
        axisClosestTo(affine, "R") == 0
        and axisClosestTo(affine, "S") == 1
        and axisClosestTo(affine, "A") == 2
    )
    assert sagittalSliceCount(node) == 4
    assert extentAlongMm(node, "S") == pytest.approx(6 * 1.1)
    # a volume stored as [S, A, R] axes
    permuted = np.array([[0, 0, 2.0, 0], [0, 0.5, 0, 0], [1.5, 0, 0, 0], [0, 0, 0, 1]])
    other = volume(scene, np.zeros((10, 3, 7), dtype=np.float32), permuted)
    assert sagittalSliceCount(other) == 7
    assert extentAlongMm(other, "S") == pytest.approx(15.0)


def test_middle_slice_centre_is_on_a_slice(scene):
    affine = GEOMETRIES["oblique"]
    node = volume(scene, np.zeros((4, 6, 5), dtype=np.float32), affine)
    centre = middleSliceCentreRas(node)
    index = np.linalg.inv(affine) @ np.append(centre, 1.0)
    np.testing.assert_allclose(index[:3], [2.0, 2.5, 2.0], atol=1e-9)  # slice 2 of 4, centre of the others


def test_to_world_applies_parent_transform(scene):
    node = volume(scene, np.zeros((2, 2, 2), dtype=np.float32), np.eye(4))
    np.testing.assert_allclose(toWorld(node, [1, 2, 3]), [1, 2, 3])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [10, -5, 2]
    transform.SetMatrixTransformToParent(vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(toWorld(node, [1, 2, 3]), [11, -3, 5])
    np.testing.assert_allclose(ijkToRas(node), np.eye(4))  # the node's own matrix is not changed


def test_an_image_whose_extent_starts_past_zero_keeps_its_place(scene):
    """VTK images may start at a non-zero extent: the first voxel then sits at IJK = that start."""
    image = vtk.vtkImageData()
    image.SetExtent(3, 6, 0, 4, 0, 5)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shifted")
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(vtkMatrixFromArray(np.diag([2.0, 1.0, 1.0, 1.0])))
    voxels, affine = arrayAndAffineFromVolume(node)
    assert voxels.shape == (4, 5, 6)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [6.0, 0, 0, 1])


def test_the_default_input_is_a_plain_scalar_volume(scene):
    """Label maps and vector volumes are scalar-volume subclasses the input selector hides: never the default."""
    assert firstScalarVolume(scene) is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour")
    scan = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    assert firstScalarVolume(scene) is scan
