"""MRML volume nodes <-> (array, voxel-to-RAS affine) in the engine's convention, and geometry questions.

`slicer.util.arrayFromVolume` indexes voxels as [k, j, i]; the engine (nibabel style) indexes [i, j, k] with
`affine @ [i, j, k, 1]` the RAS position in mm. A node's IJK-to-RAS matrix *is* that affine, so converting
only moves array axes; oblique and flipped directions need nothing else.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

RAS_AXIS = {"R": 0, "A": 1, "S": 2}


def arrayFromVtkMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)], dtype=float)


def vtkMatrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def ijkToRas(volumeNode) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix (its voxel-to-world affine, parent transforms not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return arrayFromVtkMatrix(matrix)


def arrayAndAffineFromVolume(volumeNode) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the voxels indexed [i, j, k] and the voxel-to-RAS affine, as the engine expects them (an image
    whose extent does not start at 0 has its first voxel at IJK = the extent's start)."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise ValueError("the volume node has no image data")
    voxels = slicer.util.arrayFromVolume(volumeNode)
    if voxels.ndim != 3:
        raise ValueError(f"a 3D scalar volume is required (voxel array shape {voxels.shape})")
    start = np.eye(4)
    start[:3, 3] = volumeNode.GetImageData().GetExtent()[::2]
    return np.array(voxels.transpose(2, 1, 0)), ijkToRas(volumeNode) @ start


def firstScalarVolume(scene):
    """The first plain scalar volume (not a label map or vector volume, which the input selector hides), or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetClassName() == "vtkMRMLScalarVolumeNode":
            return node
    return None


def setVolumeFromArrayAndAffine(volumeNode, array: np.ndarray, affine: np.ndarray) -> None:
    """Replace a node's voxels ([i, j, k] array) and geometry (voxel-to-RAS affine)."""
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=float)
    if array.ndim != 3:
        raise ValueError(f"a 3D array is required (shape {array.shape})")
    if affine.shape != (4, 4):
        raise ValueError(f"a 4x4 affine is required (shape {affine.shape})")
    slicer.util.updateVolumeFromArray(volumeNode, np.ascontiguousarray(array.transpose(2, 1, 0)))
    volumeNode.SetIJKToRASMatrix(vtkMatrixFromArray(affine))


def axisClosestTo(affine: np.ndarray, rasAxis: str) -> int:
    """The array axis (0 = i, 1 = j, 2 = k) whose direction is closest to the R, A or S world axis."""
    directions = np.asarray(affine, dtype=float)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    return int(np.argmax(np.abs(directions[RAS_AXIS[rasAxis]])))


def spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def dimensionsIjk(volumeNode) -> tuple[int, int, int]:
    return tuple(int(n) for n in volumeNode.GetImageData().GetDimensions())


def sagittalSliceCount(volumeNode) -> int:
    """How many sagittal slices the engine can choose from (the length of the left-right array axis)."""
    return dimensionsIjk(volumeNode)[axisClosestTo(ijkToRas(volumeNode), "R")]


def extentAlongMm(volumeNode, rasAxis: str) -> float:
    """Field of view along the array axis closest to a world axis (voxels x spacing), e.g. "S" for height."""
    affine = ijkToRas(volumeNode)
    axis = axisClosestTo(affine, rasAxis)
    return float(dimensionsIjk(volumeNode)[axis] * spacing(affine)[axis])


def middleSliceCentreRas(volumeNode) -> np.ndarray:
    """RAS point at the centre of the middle sagittal slice (a real slice, not between two)."""
    affine = ijkToRas(volumeNode)
    dims = np.array(dimensionsIjk(volumeNode), dtype=float)
    centre = (dims - 1) / 2.0
    lrAxis = axisClosestTo(affine, "R")
    centre[lrAxis] = np.floor(dims[lrAxis] / 2.0)
    return (affine @ np.append(centre, 1.0))[:3]


def toWorld(node, rasPoint) -> np.ndarray:
    """A point in the node's own RAS space moved through its parent transforms (if any) into world space."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.asarray(rasPoint, dtype=float)
    transform = vtk.vtkGeneralTransform()
    parent.GetTransformToWorld(transform)
    return np.array(transform.TransformPoint([float(c) for c in rasPoint]))
