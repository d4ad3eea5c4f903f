"""Does a completion keep the input? Compare the known region of the output with the input, voxel for voxel.

The output's grid must coincide with the input's grid (same spacing and directions, integer offset; an axis may
be reversed by the reader), and inside the known-region mask the values must be the input's values. Used by the
module's self-test and by CI on real engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .volume_geometry import arrayAndAffineFromVolume

GRID_TOLERANCE = 1e-3  # voxels: NIfTI stores the affine in float32


@dataclass(frozen=True)
class KnownRegionCheck:
    gridAligned: bool  # every output voxel centre falls on an input voxel centre
    knownVoxels: int  # voxels of the mask that lie inside the input
    outsideInput: int  # mask voxels that map outside the input (should be 0)
    maximumDifference: float  # largest |output - input| over the known voxels
    inputRange: float  # max - min of the input, to judge the difference

    def reproducesInput(self, relativeTolerance: float = 1e-4) -> bool:
        return (
            self.gridAligned
            and self.knownVoxels > 0
            and self.outsideInput == 0
            and self.maximumDifference <= relativeTolerance * max(self.inputRange, 1e-12)
        )


def outputToInputIndex(inputAffine: np.ndarray, outputAffine: np.ndarray) -> np.ndarray:
    """4x4 map from output voxel indices to input voxel indices."""
    return np.linalg.inv(np.asarray(inputAffine, dtype=float)) @ np.asarray(outputAffine, dtype=float)


def isGridAligned(indexMap: np.ndarray) -> bool:
    """True when the map is a signed axis permutation with an integer offset (no resampling needed)."""
    linear, offset = indexMap[:3, :3], indexMap[:3, 3]
    rounded = np.round(linear)
    permutation = np.abs(rounded)
    return (
        np.allclose(linear, rounded, atol=GRID_TOLERANCE)
        and np.array_equal(permutation.sum(axis=0), np.ones(3))
        and np.array_equal(permutation.sum(axis=1), np.ones(3))
        and np.allclose(offset, np.round(offset), atol=GRID_TOLERANCE)
    )


def checkKnownRegion(inputNode, outputNode, maskNode) -> KnownRegionCheck:
    """Compare the output with the input wherever the mask says the input was known."""
    inputArray, inputAffine = arrayAndAffineFromVolume(inputNode)
    outputArray, outputAffine = arrayAndAffineFromVolume(outputNode)
    maskArray, maskAffine = arrayAndAffineFromVolume(maskNode)
    indexMap = outputToInputIndex(inputAffine, outputAffine)
    aligned = isGridAligned(indexMap) and isGridAligned(outputToInputIndex(outputAffine, maskAffine))
    # Mask voxels -> output voxels (same grid, possibly reversed axes) -> input voxels.
    maskIndices = np.argwhere(maskArray > 0)
    homogeneous = np.c_[maskIndices, np.ones(len(maskIndices))].T
    outputIndices = np.round(outputToInputIndex(outputAffine, maskAffine) @ homogeneous)[:3].astype(int).T
    inputIndices = (
        np.round(indexMap[:3] @ np.r_[outputIndices.T, np.ones((1, len(outputIndices)))]).astype(int).T
    )
    inside = np.all((inputIndices >= 0) & (inputIndices < np.array(inputArray.shape)), axis=1)
    inside &= np.all((outputIndices >= 0) & (outputIndices < np.array(outputArray.shape)), axis=1)
    known = inputIndices[inside]
    outputKnown = outputIndices[inside]
    difference = 0.0
    if len(known):
        inputValues = inputArray[known[:, 0], known[:, 1], known[:, 2]].astype(float)
        outputValues = outputArray[outputKnown[:, 0], outputKnown[:, 1], outputKnown[:, 2]].astype(float)
        difference = float(np.max(np.abs(outputValues - inputValues)))
    return KnownRegionCheck(
        gridAligned=bool(aligned),
        knownVoxels=int(len(known)),
        outsideInput=int(np.count_nonzero(~inside)),
        maximumDifference=difference,
        inputRange=float(inputArray.max() - inputArray.min()),
    )


def sameImageInWorld(
    arrayA: np.ndarray, affineA: np.ndarray, arrayB: np.ndarray, affineB: np.ndarray
) -> bool:
    """True when two volumes hold the same voxel values at the same world positions, whatever their axis order
    or direction (what Slicer's reader may change when it loads a left-handed file)."""
    indexMap = outputToInputIndex(affineA, affineB)  # B index -> A index
    if not isGridAligned(indexMap) or sorted(arrayA.shape) != sorted(arrayB.shape):
        return False
    indices = np.argwhere(np.ones(arrayB.shape, dtype=bool))
    mapped = np.round(indexMap[:3] @ np.c_[indices, np.ones(len(indices))].T).astype(int).T
    if np.any(mapped < 0) or np.any(mapped >= np.array(arrayA.shape)):
        return False
    return bool(np.array_equal(arrayA[tuple(mapped.T)].astype(float), arrayB[tuple(indices.T)].astype(float)))
