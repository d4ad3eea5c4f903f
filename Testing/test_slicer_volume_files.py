"""Input node -> NIfTI for the engine and engine NIfTI -> new node, through Slicer's storage nodes."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from conftest import oblique_affine, write_nifti
from fovcompletion.image_io import Volume, read_volume, write_volume
from FOVCompletionLib.known_region import sameImageInWorld
from FOVCompletionLib.volume_files import readVolumeFromFile, writeVolumeToFile
from FOVCompletionLib.volume_geometry import (
    arrayAndAffineFromVolume,
    setVolumeFromArrayAndAffine,
    vtkMatrixFromArray,
)

AFFINES = {
    "oblique": oblique_affine((0.8, 1.1, 3.0), 12.0),
    "flipped": oblique_affine((0.8, 1.1, 3.0), -7.0, flips=(-1, 1, -1)),
    "right-handed": np.diag([0.5, 0.7, 2.0, 1.0]),
}


def scan(seed=0, shape=(5, 9, 7)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)


def snapshot(node) -> dict:
    array, affine = arrayAndAffineFromVolume(node)
    return {
        "array": array,
        "affine": affine,
        "name": node.GetName(),
        "storage": node.GetStorageNodeID(),
        "display": node.GetDisplayNodeID(),
        "transform": node.GetTransformNodeID(),
        "mtime": node.GetMTime(),
        "image_mtime": node.GetImageData().GetMTime(),
    }


@pytest.mark.parametrize("name", AFFINES)
def test_written_file_has_the_node_voxels_and_geometry(tmp_path, name):
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    array = scan()
    setVolumeFromArrayAndAffine(node, array, AFFINES[name])
    before = snapshot(node)
    nodes_before = scene.GetNumberOfNodes()
    path = writeVolumeToFile(node, tmp_path / "input.nii")
    image = nib.load(str(path))
    # [i, j, k] in the file, as in the engine
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), array)
    np.testing.assert_allclose(image.affine, AFFINES[name], atol=1e-5)
    # the engine's own reader agrees
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, AFFINES[name], atol=1e-5)
    after = snapshot(node)
    np.testing.assert_array_equal(after.pop("array"), before.pop("array"))
    np.testing.assert_array_equal(after.pop("affine"), before.pop("affine"))
    assert after == before  # not modified in any way: no storage node attached, same modification time
    assert scene.GetNumberOfNodes() == nodes_before  # the temporary storage node is gone


@pytest.mark.parametrize("name", AFFINES)
def test_engine_result_reads_into_a_new_node_in_the_same_world(tmp_path, name):
    scene = slicer.vtkMRMLScene()
    array = scan(1).astype(np.float32)
    path = write_volume(Volume(array, AFFINES[name]), tmp_path / "completed.nii.gz")
    node = readVolumeFromFile(scene, path, "scan completed")
    assert node.GetName() == "scan completed"
    assert node.GetStorageNodeID() is None  # nothing points at the temporary file
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeArchetypeStorageNode") == 0
    assert node.GetDisplayNode() is not None
    read_array, read_affine = arrayAndAffineFromVolume(node)
    assert sameImageInWorld(array, AFFINES[name], read_array, read_affine)
    assert not sameImageInWorld(array + 1, AFFINES[name], read_array, read_affine)


def test_label_map_and_unique_names(tmp_path):
    scene = slicer.vtkMRMLScene()
    mask = np.zeros((3, 8, 4), dtype=np.uint8)
    mask[:, 2:6] = 1
    path = write_nifti(tmp_path / "mask.nii.gz", mask, AFFINES["right-handed"])
    first = readVolumeFromFile(scene, path, "known region", "vtkMRMLLabelMapVolumeNode")
    second = readVolumeFromFile(scene, path, "known region", "vtkMRMLLabelMapVolumeNode")
    assert first.IsA("vtkMRMLLabelMapVolumeNode")
    assert first.GetName() != second.GetName()
    np.testing.assert_array_equal(arrayAndAffineFromVolume(first)[0], mask)


def test_reading_into_an_existing_node_keeps_its_own_storage(tmp_path):
    scene = slicer.vtkMRMLScene()
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    setVolumeFromArrayAndAffine(target, np.zeros((2, 2, 2), dtype=np.float32), np.eye(4))
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    target.SetAndObserveStorageNodeID(storage.GetID())
    path = write_nifti(tmp_path / "r.nii.gz", scan(2).astype(np.float32), AFFINES["right-handed"])
    node = readVolumeFromFile(scene, path, "ignored", targetNode=target)
    assert node is target and node.GetName() == "my output"
    assert node.GetStorageNodeID() == storage.GetID()
    assert arrayAndAffineFromVolume(node)[0].shape == (5, 9, 7)


def test_missing_or_unreadable_result_is_an_error_and_adds_nothing(tmp_path):
    scene = slicer.vtkMRMLScene()
    with pytest.raises(FileNotFoundError):
        readVolumeFromFile(scene, tmp_path / "absent.nii.gz", "x")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError):
        readVolumeFromFile(scene, broken, "x")
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLStorageNode") == 0


def test_parent_transform_is_not_baked_into_the_file(tmp_path):
    """The engine works in the node's own space; the result node gets the same parent transform later."""
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    setVolumeFromArrayAndAffine(node, scan(3), AFFINES["oblique"])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [5, 6, 7]
    transform.SetMatrixTransformToParent(vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    image = nib.load(str(writeVolumeToFile(node, tmp_path / "in.nii")))
    np.testing.assert_allclose(image.affine, AFFINES["oblique"], atol=1e-5)
