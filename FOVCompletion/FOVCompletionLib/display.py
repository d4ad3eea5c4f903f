"""Show a completion beside and over the original: side-by-side sagittal views with linked slices.

Left view ("Red"): the original. Right view ("Yellow"): the completion, with the original laid over it at an
adjustable opacity and the known region's boundary drawn as a label-map outline. Both views look at the same
world region and jump to the middle sagittal slice of the completed slab. Works on any scene: without a layout
node (no application) the layout is left alone, and a view without slice/composite nodes is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import slicer

from .view_fit import FitKeeper, keepFitted
from .volume_geometry import middleSliceCentreRas, toWorld

ORIGINAL_VIEW = "Red"
COMPLETION_VIEW = "Yellow"
DEFAULT_OVERLAY_OPACITY = 0.5
# Node attribute naming what a node produced by this module is, so the panel only touches views showing one.
ROLE_ATTRIBUTE = "FOVCompletion.Role"
COMPLETION_ROLE = "completion"
KNOWN_REGION_ROLE = "known-region"
SPREAD_ROLE = "spread"


@dataclass
class DisplaySetup:
    """What could be configured (a missing application part is reported, not raised)."""

    layoutChanged: bool = False
    configuredViews: list[str] = field(default_factory=list)
    centreRas: tuple[float, float, float] | None = None
    fitKeeper: FitKeeper | None = None  # keeps the completion view fitted while the layout settles


def _nodesByClass(scene, className: str) -> list:
    return [scene.GetNthNodeByClass(i, className) for i in range(scene.GetNumberOfNodesByClass(className))]


def sliceNodeForView(scene, viewName: str):
    return next((n for n in _nodesByClass(scene, "vtkMRMLSliceNode") if n.GetLayoutName() == viewName), None)


def sliceCompositeNodeForView(scene, viewName: str):
    return next(
        (n for n in _nodesByClass(scene, "vtkMRMLSliceCompositeNode") if n.GetLayoutName() == viewName), None
    )


def _id(node) -> str | None:
    return node.GetID() if node is not None else None


def copyDisplaySettings(sourceNode, targetNode) -> None:
    """Same window/level as the input, so the completion and the overlay compare at a glance."""
    source, target = sourceNode.GetDisplayNode(), targetNode.GetDisplayNode()
    if source is None or target is None or not hasattr(source, "GetWindow"):
        return
    target.SetAutoWindowLevel(False)
    target.SetWindowLevel(source.GetWindow(), source.GetLevel())


def tagRole(node, role: str) -> None:
    node.SetAttribute(ROLE_ATTRIBUTE, role)


def hasRole(node, role: str) -> bool:
    return node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == role


def setOverlayOpacity(scene, opacity: float) -> bool:
    """Opacity of the original over the completion (0 = completion only, 1 = original only).

    Only when the completion view shows a completion: a view the user filled with something else is left alone.
    Returns whether the opacity was set.
    """
    compositeNode = sliceCompositeNodeForView(scene, COMPLETION_VIEW)
    if compositeNode is None:
        return False
    background = scene.GetNodeByID(compositeNode.GetBackgroundVolumeID() or "")
    if not hasRole(background, COMPLETION_ROLE):
        return False
    compositeNode.SetForegroundOpacity(min(1.0, max(0.0, float(opacity))))
    return True


def _useSideBySideLayout(scene) -> bool:
    layoutNodes = _nodesByClass(scene, "vtkMRMLLayoutNode")
    if not layoutNodes:
        return False
    layoutNodes[0].SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    return True


def showCompletion(
    scene,
    inputNode,
    outputNode,
    maskNode=None,
    overlayOpacity: float = DEFAULT_OVERLAY_OPACITY,
    appLogic=None,
) -> DisplaySetup:
    """Switch to side-by-side sagittal views showing the original and the overlaid completion.

    `appLogic` (Slicer's application logic) is optional: when given, the completion view is zoomed to fit (and kept
    fitted while the new layout settles) and the original view gets the same field of view, so anatomy appears at
    the same place in both.
    """
    tagRole(outputNode, COMPLETION_ROLE)  # so that later opacity changes reach this view (setOverlayOpacity)
    setup = DisplaySetup(layoutChanged=_useSideBySideLayout(scene))
    views = {
        ORIGINAL_VIEW: (_id(inputNode), None, None),
        COMPLETION_VIEW: (_id(outputNode), _id(inputNode), _id(maskNode)),
    }
    for viewName, (background, foreground, label) in views.items():
        sliceNode = sliceNodeForView(scene, viewName)
        compositeNode = sliceCompositeNodeForView(scene, viewName)
        if sliceNode is None or compositeNode is None:
            logging.info(
                f"FOVCompletion: no {viewName} slice view in this scene; not showing the result there"
            )
            continue
        if not sliceNode.SetOrientationToSagittal():
            logging.warning(f"FOVCompletion: the {viewName} view has no sagittal orientation preset")
        compositeNode.SetBackgroundVolumeID(background)
        compositeNode.SetForegroundVolumeID(foreground)
        compositeNode.SetLabelVolumeID(label)
        compositeNode.SetLinkedControl(True)
        if viewName == COMPLETION_VIEW:
            compositeNode.SetForegroundOpacity(min(1.0, max(0.0, float(overlayOpacity))))
            compositeNode.SetLabelOpacity(1.0)
            sliceNode.SetUseLabelOutline(True)
        setup.configuredViews.append(viewName)

    if COMPLETION_VIEW in setup.configuredViews:
        followers = [sliceNodeForView(scene, ORIGINAL_VIEW)] if ORIGINAL_VIEW in setup.configuredViews else []
        # Fitted now, and again as the new layout gives the views their size (view_fit): not a guess of when.
        setup.fitKeeper = keepFitted(appLogic, COMPLETION_VIEW, followers)
    centre = toWorld(outputNode, middleSliceCentreRas(outputNode))
    for viewName in setup.configuredViews:
        sliceNodeForView(scene, viewName).JumpSliceByCentering(*centre)
    setup.centreRas = tuple(float(c) for c in centre)
    return setup
