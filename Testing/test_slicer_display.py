"""Showing a result: side-by-side sagittal views, overlay, known-region outline, linked and centred slices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from conftest import oblique_affine
from FOVCompletionLib.display import (
    COMPLETION_ROLE,
    COMPLETION_VIEW,
    ORIGINAL_VIEW,
    ROLE_ATTRIBUTE,
    setOverlayOpacity,
    showCompletion,
    sliceCompositeNodeForView,
    sliceNodeForView,
)
from FOVCompletionLib.view_fit import stopKeepingFitted
from FOVCompletionLib.volume_geometry import setVolumeFromArrayAndAffine, vtkMatrixFromArray

AFFINE = oblique_affine((1.0, 0.8, 0.8), 6.0)


def application_scene():
    """A scene as Slicer's application sets it up: layout node, slice nodes, slice logics and composite nodes."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkMRMLApplicationLogic()
    app_logic.SetMRMLScene(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout_logic.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    logics = vtk.vtkCollection()
    for name in ("Red", "Yellow", "Green"):
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app_logic)
        slice_logic.SetMRMLScene(scene)
        slice_logic.SetSliceNode(scene.GetNodeByID(f"vtkMRMLSliceNode{name}"))
        logics.AddItem(slice_logic)
    app_logic.SetSliceLogics(logics)
    return scene, app_logic, layout_logic, logics


def volumes(scene):
    source = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    setVolumeFromArrayAndAffine(source, np.ones((6, 40, 30), dtype=np.float32), AFFINE)
    shift = np.eye(4)
    shift[:3, 3] = [1, -20, 0]  # 4 central slices, 20 rows added above
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan completed")
    setVolumeFromArrayAndAffine(output, np.ones((4, 100, 30), dtype=np.float32), AFFINE @ shift)
    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "scan known region")
    setVolumeFromArrayAndAffine(mask, np.ones((4, 100, 30), dtype=np.uint8), AFFINE @ shift)
    for node in (source, output, mask):
        node.CreateDefaultDisplayNodes()
    return source, output, mask


def test_application_scene_gets_side_by_side_overlay():
    scene, app_logic, layout_logic, _logics = application_scene()
    source, output, mask = volumes(scene)
    setup = showCompletion(scene, source, output, mask, overlayOpacity=0.3, appLogic=app_logic)
    assert setup.layoutChanged and setup.configuredViews == [ORIGINAL_VIEW, COMPLETION_VIEW]
    assert (
        layout_logic.GetLayoutNode().GetViewArrangement()
        == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    )

    original = sliceCompositeNodeForView(scene, ORIGINAL_VIEW)
    assert original.GetBackgroundVolumeID() == source.GetID()
    assert original.GetForegroundVolumeID() is None and original.GetLabelVolumeID() is None

    completion = sliceCompositeNodeForView(scene, COMPLETION_VIEW)
    assert completion.GetBackgroundVolumeID() == output.GetID()
    assert completion.GetForegroundVolumeID() == source.GetID()
    assert completion.GetForegroundOpacity() == pytest.approx(0.3)
    assert completion.GetLabelVolumeID() == mask.GetID() and completion.GetLabelOpacity() == 1.0
    assert sliceNodeForView(scene, COMPLETION_VIEW).GetUseLabelOutline()  # boundary, not a filled area

    for view in (ORIGINAL_VIEW, COMPLETION_VIEW):
        assert sliceNodeForView(scene, view).GetOrientation() == "Sagittal"
        assert sliceCompositeNodeForView(scene, view).GetLinkedControl()
    green = sliceCompositeNodeForView(scene, "Green")
    assert green.GetBackgroundVolumeID() is None  # other views are left alone

    # both views show the same world region, centred on the middle sagittal slice of the completed slab
    centre = AFFINE @ np.array([1 + 2, -20 + 49.5, 14.5, 1.0])
    assert np.allclose(setup.centreRas, centre[:3])
    red, yellow = sliceNodeForView(scene, ORIGINAL_VIEW), sliceNodeForView(scene, COMPLETION_VIEW)
    for node in (red, yellow):
        slice_to_ras = np.array([[node.GetSliceToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
        # the normal is along left-right and the plane goes through the centre
        np.testing.assert_allclose(np.abs(slice_to_ras[:3, 2]), [1, 0, 0], atol=1e-9)
        np.testing.assert_allclose(slice_to_ras[:3, 3], centre[:3], atol=1e-6)
        assert abs(node.GetSliceOffset()) == pytest.approx(abs(centre[0]))
    assert red.GetFieldOfView() == pytest.approx(yellow.GetFieldOfView())
    assert yellow.GetFieldOfView()[1] >= 0.8 * 100 * 0.8  # fitted to the completion's height

    setOverlayOpacity(scene, 0.9)
    assert completion.GetForegroundOpacity() == pytest.approx(0.9)
    setOverlayOpacity(scene, 3)
    assert completion.GetForegroundOpacity() == 1.0


def test_scene_without_application_logic():
    """Slice and composite nodes made by hand (as a test or a batch script would): no fit, same result otherwise."""
    scene = slicer.vtkMRMLScene()
    for name in (ORIGINAL_VIEW, COMPLETION_VIEW):
        slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        slice_node.SetLayoutName(name)
        sagittal = vtk.vtkMatrix3x3()
        for row, values in enumerate([[0, 0, -1], [-1, 0, 0], [0, 1, 0]]):
            for col, value in enumerate(values):
                sagittal.SetElement(row, col, value)
        slice_node.AddSliceOrientationPreset("Sagittal", sagittal)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
    source, output, mask = volumes(scene)
    setup = showCompletion(scene, source, output, None)
    assert not setup.layoutChanged and setup.configuredViews == [ORIGINAL_VIEW, COMPLETION_VIEW]
    completion = sliceCompositeNodeForView(scene, COMPLETION_VIEW)
    assert completion.GetLabelVolumeID() is None and completion.GetForegroundOpacity() == pytest.approx(0.5)
    assert sliceNodeForView(scene, COMPLETION_VIEW).GetOrientation() == "Sagittal"


def test_bare_scene_is_handled_gracefully():
    scene = slicer.vtkMRMLScene()
    source, output, mask = volumes(scene)
    setup = showCompletion(scene, source, output, mask)
    assert setup.configuredViews == [] and not setup.layoutChanged
    setOverlayOpacity(scene, 0.2)  # no view: nothing to do, no error


def test_centre_follows_a_parent_transform():
    scene, app_logic, _layout, _logics = application_scene()
    source, output, mask = volumes(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [30, 0, 0]
    transform.SetMatrixTransformToParent(vtkMatrixFromArray(shift))
    output.SetAndObserveTransformNodeID(transform.GetID())
    setup = showCompletion(scene, source, output, mask, appLogic=app_logic)
    expected = AFFINE @ np.array([3, 29.5, 14.5, 1.0])
    assert setup.centreRas[0] == pytest.approx(expected[0] + 30)


def test_opacity_changes_only_reach_a_view_showing_a_completion():
    scene, app_logic, _layout, _logics = application_scene()
    source, output, mask = volumes(scene)
    yellow = sliceCompositeNodeForView(scene, COMPLETION_VIEW)
    # the user shows something unrelated in the Yellow view, with their own overlay
    yellow.SetBackgroundVolumeID(source.GetID())
    yellow.SetForegroundVolumeID(mask.GetID())
    yellow.SetForegroundOpacity(0.8)
    assert setOverlayOpacity(scene, 0.1) is False
    assert yellow.GetForegroundOpacity() == pytest.approx(0.8)

    showCompletion(scene, source, output, mask, overlayOpacity=0.3, appLogic=app_logic)
    assert output.GetAttribute(ROLE_ATTRIBUTE) == COMPLETION_ROLE
    assert setOverlayOpacity(scene, 0.6) is True
    assert yellow.GetForegroundOpacity() == pytest.approx(0.6)


def fitted_field_of_view(app_logic, scene, view):
    """What a fresh FitSliceToAll gives for the view's current size (the reference a kept-fitted view must match)."""
    node = sliceNodeForView(scene, view)
    saved = node.GetFieldOfView()
    app_logic.GetSliceLogicByLayoutName(view).FitSliceToAll()
    fitted = node.GetFieldOfView()
    node.SetFieldOfView(*saved)
    return fitted


def test_views_are_fitted_again_when_the_layout_resizes_them():
    """Issue 15, item 8: the views get their final size after the layout switch; the fit follows every resize
    (as the application's slice views report it, vtkMRMLSliceLogic.ResizeSliceNode), until the person zooms."""
    scene, app_logic, _layout, _logics = application_scene()
    source, output, mask = volumes(scene)
    red, yellow = sliceNodeForView(scene, ORIGINAL_VIEW), sliceNodeForView(scene, COMPLETION_VIEW)
    logic = app_logic.GetSliceLogicByLayoutName(COMPLETION_VIEW)
    red_logic = app_logic.GetSliceLogicByLayoutName(ORIGINAL_VIEW)
    for slice_logic in (logic, red_logic):
        slice_logic.ResizeSliceNode(600, 150)  # the four-up views before the switch: wide and low
    setup = showCompletion(scene, source, output, mask, appLogic=app_logic)
    offset = yellow.GetSliceOffset()  # the middle sagittal slice of the completion
    assert setup.fitKeeper is not None and setup.fitKeeper.active

    for slice_logic in (logic, red_logic):  # the side-by-side views get their size: narrow and tall
        slice_logic.ResizeSliceNode(300, 900)
    fitted = fitted_field_of_view(app_logic, scene, COMPLETION_VIEW)
    assert yellow.GetFieldOfView() == pytest.approx(fitted)
    assert red.GetFieldOfView() == pytest.approx(fitted)  # the original keeps the same field of view
    assert yellow.GetSliceOffset() == pytest.approx(offset)  # still the same sagittal slice
    # without the refit the stale fit (made for 600 x 150) would cut the completion's height: 100 rows x 0.8 mm
    assert yellow.GetFieldOfView()[1] >= 100 * 0.8

    zoomed = [value / 2 for value in yellow.GetFieldOfView()[:2]] + [yellow.GetFieldOfView()[2]]
    yellow.SetFieldOfView(*zoomed)  # the person zooms in
    assert not setup.fitKeeper.active
    logic.ResizeSliceNode(300, 600)  # a later resize keeps their zoom (ResizeSliceNode keeps the height)
    assert yellow.GetFieldOfView()[1] == pytest.approx(zoomed[1])


def test_a_new_result_replaces_the_previous_fit_keeper():
    scene, app_logic, _layout, _logics = application_scene()
    source, output, mask = volumes(scene)
    first = showCompletion(scene, source, output, mask, appLogic=app_logic).fitKeeper
    second = showCompletion(scene, source, output, mask, appLogic=app_logic).fitKeeper
    assert second.active and not first.active
    fits = second.fits
    app_logic.GetSliceLogicByLayoutName(COMPLETION_VIEW).ResizeSliceNode(500, 700)
    assert second.fits == fits + 1 and first.fits == 1
    stopKeepingFitted()
    assert not second.active
