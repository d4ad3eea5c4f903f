"""The live preview in the scene: the completion's volume node, updated in place from the engine's preview file.

The engine (`--preview-every N --preview-volume FILE`) rewrites the file atomically every N steps and names it in
its progress events. The first preview creates the output node (or fills the output node the person chose, whose
content is kept aside); later ones replace its voxels and geometry in place, so the views showing it follow the
anatomy as it appears. On success the final result is read into this same node; on failure or cancel a created
node is removed and a chosen one gets its content back: nothing is added to the scene.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import vtk

from .display import COMPLETION_ROLE, ROLE_ATTRIBUTE, copyDisplaySettings, tagRole
from .volume_files import readVolumeFromFile


def snapshotNode(node) -> tuple:
    """What a preview or a run's result changes in a chosen node (voxels, geometry, parent transform, role, and
    its display's window/level, which takes the input's), to give it back."""
    image = node.GetImageData()
    copy = None
    if image is not None:
        copy = vtk.vtkImageData()
        copy.DeepCopy(image)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    display = node.GetDisplayNode()
    windowLevel = None
    if display is not None and hasattr(display, "GetWindow"):
        windowLevel = (display.GetAutoWindowLevel(), display.GetWindow(), display.GetLevel())
    return copy, matrix, node.GetTransformNodeID(), node.GetAttribute(ROLE_ATTRIBUTE), display, windowLevel


def restoreNode(node, saved: tuple) -> None:
    image, matrix, transformId, role, display, windowLevel = saved
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(transformId)
    if role is None:
        node.RemoveAttribute(ROLE_ATTRIBUTE)
    else:
        node.SetAttribute(ROLE_ATTRIBUTE, role)
    current = node.GetDisplayNode()
    if display is None and current is not None and node.GetScene() is not None:
        node.GetScene().RemoveNode(current)  # made for the result: the node had none
    elif windowLevel is not None and current is display:
        auto, window, level = windowLevel
        display.SetWindowLevel(window, level)
        display.SetAutoWindowLevel(auto)


class PreviewVolume:
    """The node a run's previews go into: None until the first preview arrives."""

    def __init__(self, scene, name: str, inputNode, targetNode=None) -> None:
        self.scene = scene
        self.name = name
        self.inputNode = inputNode
        self.targetNode = targetNode
        self.node = None
        self.updates = 0
        self._saved: tuple | None = None

    @property
    def created(self) -> bool:
        """True when the previews made a new node (no output node was chosen)."""
        return self.node is not None and self.node is not self.targetNode

    def update(self, path: str | os.PathLike) -> bool:
        """Read the preview file into the node; False when it is gone (the run ended and removed it).

        The file is copied first (one open, so a whole version of it) and the copy is read: the engine replaces
        the file every few steps and removes it at the end, and a reader that opens the file more than once (ITK
        reads the header, then the voxels) could meet another version or none, fail, and leave the node empty."""
        path = Path(path)
        copy = path.with_name("shown-" + path.name)  # same extension: the reader picks the format by it
        try:
            shutil.copyfile(path, copy)
        except FileNotFoundError:
            return False
        try:
            self._read(copy)
        finally:
            copy.unlink(missing_ok=True)
        return True

    def _read(self, path: Path) -> None:
        if self.node is not None and self.node.GetScene() is not self.scene:
            self.node, self._saved = None, None  # removed during the run: the next preview makes a new node
        if self.targetNode is not None and self.targetNode.GetScene() is not self.scene:
            self.targetNode = None
        first = self.node is None
        if first and self.targetNode is not None:
            self._saved = snapshotNode(self.targetNode)
        node = readVolumeFromFile(self.scene, path, self.name, targetNode=self.node or self.targetNode)
        if first:
            self.node = node
            copyDisplaySettings(self.inputNode, node)  # the input's window/level: no flicker between updates
            tagRole(node, COMPLETION_ROLE)
            node.SetAndObserveTransformNodeID(self.inputNode.GetTransformNodeID())
        self.updates += 1

    def discard(self) -> None:
        """The run did not succeed: remove a created node, or give the chosen one its content back."""
        if self.node is None:
            return
        if self.created:
            self.scene.RemoveNode(self.node)
        elif self._saved is not None:
            restoreNode(self.node, self._saved)
        self.node = None
        self._saved = None
