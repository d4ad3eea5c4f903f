"""Input node -> temporary file for the engine, and engine results -> volume nodes, through Slicer's storage nodes.

Slicer's own readers and writers are used so that the Slicer process needs no NIfTI library and every volume
type Slicer loads can be completed. The reader may reverse an axis to keep the voxel grid right-handed; the
world (RAS) position of every voxel is unchanged, which is what matters (principle 3 of the design).
"""

from __future__ import annotations

import os
from pathlib import Path

STORAGE_NODE_CLASS = "vtkMRMLVolumeArchetypeStorageNode"


def writeVolumeToFile(volumeNode, path: str | os.PathLike, compress: bool = False) -> Path:
    """Write a volume node's voxels and geometry without attaching a storage node to it (the node is untouched)."""
    path = Path(path)
    scene = volumeNode.GetScene()
    storageNode = scene.AddNewNodeByClass(STORAGE_NODE_CLASS)
    try:
        storageNode.SetFileName(str(path))
        storageNode.SetUseCompression(bool(compress))
        if not storageNode.WriteData(volumeNode) or not path.is_file():
            raise OSError(f"could not write {volumeNode.GetName()} to {path}")
    finally:
        scene.RemoveNode(storageNode)
    return path


def readVolumeFromFile(
    scene,
    path: str | os.PathLike,
    name: str,
    nodeClass: str = "vtkMRMLScalarVolumeNode",
    targetNode=None,
):
    """Load a volume file into `targetNode` (when it is still in the scene) or a new node, leaving no storage node
    pointing at the (temporary) file.

    The node is then like one made in Slicer and never saved, so "Save" proposes a fresh file name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file is missing: {path}")
    if targetNode is not None and targetNode.GetScene() is not scene:
        targetNode = None  # removed from the scene since it was chosen: a new node, not one nobody can see
    createdNode = targetNode is None
    node = scene.AddNewNodeByClass(nodeClass, scene.GenerateUniqueName(name)) if createdNode else targetNode
    previousStorageNodeId = None if createdNode else node.GetStorageNodeID()
    storageNode = scene.AddNewNodeByClass(STORAGE_NODE_CLASS)
    try:
        storageNode.SetFileName(str(path))
        if not storageNode.ReadData(node):
            if createdNode:
                scene.RemoveNode(node)
            raise OSError(f"could not read the result file {path.name}")
    finally:
        if node.GetScene() is not None and node.GetStorageNodeID() == storageNode.GetID():
            node.SetAndObserveStorageNodeID(previousStorageNodeId)
        scene.RemoveNode(storageNode)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node
