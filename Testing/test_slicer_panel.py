"""The slice widgets' limits follow the input volume but never leave the parameter node's ranges (issue 15, item 4):
a volume with more sagittal slices than a field accepts used to let the spin box reach a value that raised inside
the Qt slot, leaving the panel and the parameter node disagreeing."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from fovcompletion.bundle import read_metadata
from fovcompletion.registry import default_bundle_name, resolve_bundle
from FOVCompletionLib.panel import (
    CANDIDATES_RANGE,
    EXTENSION_RANGE,
    SLICE_COUNT_RANGE,
    SLICE_INDEX_RANGE,
    STEPS_RANGE,
    ExtensionProblem,
    defaultSliceRange,
    extensionProblem,
    modelSampling,
    sliceLimits,
    sliceRangeForNewInput,
)
from FOVCompletionLib.volume_geometry import sagittalSliceCount, setVolumeFromArrayAndAffine

MODULE = Path(__file__).resolve().parents[1] / "FOVCompletion"
SAGITTAL = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])  # i: R->L, j: S->I, k: P->A


def volume_with_sagittal_slices(count: int):
    node = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLScalarVolumeNode", "wide")
    setVolumeFromArrayAndAffine(node, np.zeros((count, 3, 2), dtype=np.int16), SAGITTAL)
    return node


def within(value: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= value <= bounds[1]


@pytest.mark.parametrize("count", [1, 5, 512, 513, 600, 5000])
def test_limits_stay_within_the_parameter_ranges(count):
    node = volume_with_sagittal_slices(count)
    assert sagittalSliceCount(node) == count
    limits = sliceLimits(sagittalSliceCount(node))
    assert limits.countMaximum == min(count, SLICE_COUNT_RANGE[1])
    assert limits.indexMaximum == min(count - 1, SLICE_INDEX_RANGE[1])
    assert within(limits.countMaximum, SLICE_COUNT_RANGE) and within(limits.indexMaximum, SLICE_INDEX_RANGE)
    first, last = defaultSliceRange(count)
    assert within(first, SLICE_INDEX_RANGE) and within(last, SLICE_INDEX_RANGE) and first <= last < count
    assert last - first + 1 == min(count, 5)


def test_default_range_is_centred_on_the_volume():
    assert defaultSliceRange(600) == (298, 302)
    assert defaultSliceRange(3) == (0, 2)
    assert defaultSliceRange(5000)[1] <= SLICE_INDEX_RANGE[1]


def test_a_new_input_keeps_a_range_it_has_and_otherwise_gets_its_middle_slices():
    """Decided from the range set before the spin boxes take the new input's limits: a range past a narrower
    input's slices (150..160 on a 20-slice input) gives its middle slices, not the clamped last slice 19..19."""
    assert sliceRangeForNewInput(150, 160, 20) == defaultSliceRange(20) == (8, 12)
    assert sliceRangeForNewInput(3, 7, 20) == (3, 7)
    assert sliceRangeForNewInput(0, 0, 20) == (8, 12)  # untouched: the middle
    assert sliceRangeForNewInput(15, 19, 20) == (15, 19)
    assert sliceRangeForNewInput(15, 20, 20) == (8, 12)


def test_the_panel_decides_a_new_inputs_range_before_it_lowers_the_spin_boxes_limits():
    """A spin box clamps its value to a lowered maximum and the parameter node follows it, so the panel must read
    the range set before giving the slice spin boxes a new input's limits."""
    tree = ast.parse((MODULE / "FOVCompletion.py").read_text())
    follow = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "_followInputVolume"
    )
    decided = min(
        node.lineno
        for node in ast.walk(follow)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "sliceRangeForNewInput"
    )
    limited = min(
        node.lineno
        for node in ast.walk(follow)
        if isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Attribute) and target.attr == "maximum" for target in node.targets)
    )
    assert decided < limited


def test_no_input_keeps_the_parameter_ranges_so_no_spin_box_clamps_a_saved_count():
    """The panel sets the spin boxes' maxima from these limits; with no volume yet, a maximum of 1 clamped the
    count of 5 to 1 and the parameter node kept it for the volume loaded next."""
    assert sliceLimits(0) == sliceLimits(-3)
    assert (
        sliceLimits(0).countMaximum == SLICE_COUNT_RANGE[1]
        and sliceLimits(0).indexMaximum == SLICE_INDEX_RANGE[1]
    )
    assert sliceLimits(0).countMaximum >= 5  # the default count survives


def parameter_fields() -> list[ast.AnnAssign]:
    tree = ast.parse((MODULE / "FOVCompletion.py").read_text(encoding="utf-8"))
    [wrapper] = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    return [statement for statement in wrapper.body if isinstance(statement, ast.AnnAssign)]


def test_parameter_node_declares_the_same_ranges():
    """FOVCompletion.py (which needs the application) declares its fields with these very constants."""
    annotations = {s.target.id: ast.unparse(s.annotation) for s in parameter_fields()}
    assert annotations["sliceCount"] == "Annotated[int, WithinRange(*SLICE_COUNT_RANGE)]"
    for name in ("sliceRangeFirst", "sliceRangeLast"):
        assert annotations[name] == "Annotated[int, WithinRange(*SLICE_INDEX_RANGE)]"
    assert annotations["steps"] == "Annotated[int, WithinRange(*STEPS_RANGE)]"
    assert annotations["candidates"] == "Annotated[int, WithinRange(*CANDIDATES_RANGE)]"
    for name in ("extendSuperiorMm", "extendInferiorMm"):
        assert annotations[name] == "Annotated[float, WithinRange(*EXTENSION_RANGE)]"
    source = (MODULE / "FOVCompletion.py").read_text(encoding="utf-8")
    assert "spinBox.maximum = limits.indexMaximum" in source
    assert "self.ui.sliceCountSpinBox.maximum = limits.countMaximum" in source


def test_choosing_a_model_gives_its_settings_within_the_parameter_ranges():
    assert modelSampling(25, 3) == (25, 3)
    assert modelSampling(5000, 20) == (STEPS_RANGE[1], CANDIDATES_RANGE[1])  # a bundle may ask for more
    assert modelSampling(50, None) == (50, 1)
    assert modelSampling(None, 3) is None  # the model does not say: the panel keeps what is set


def test_a_new_panel_starts_with_the_default_models_settings():
    """The parameter node's defaults and the .ui's spin boxes are the bundled default model's steps and
    candidates, so that a first run is the one the model card's figures describe."""
    defaults = {
        s.target.id: ast.literal_eval(s.value)
        for s in parameter_fields()
        if s.target.id in ("steps", "candidates")
    }
    model = read_metadata(resolve_bundle(default_bundle_name()))
    assert defaults == {"steps": model.steps, "candidates": model.candidates}
    ui = ElementTree.parse(MODULE / "Resources" / "UI" / "FOVCompletion.ui").getroot()
    values = {}
    for widget in ui.iter("widget"):
        names = [
            p.findtext("string") for p in widget.findall("property") if p.get("name") == "SlicerParameterName"
        ]
        if names and names[0] in defaults:
            values[names[0]] = int(
                [p for p in widget.findall("property") if p.get("name") == "value"][0].findtext("number")
            )
    assert values == defaults


def test_the_extensions_the_engine_refuses_keep_apply_off_with_the_reason():
    """The panel allowed 2000 mm a side while the engine refuses more than 1500 mm in all: Apply ran the
    export, then failed. The spin boxes, the parameter node and the Apply button now follow the engine's limit."""
    from fovcompletion.layout import MAX_TOTAL_EXTENSION_MM

    assert EXTENSION_RANGE == (0.0, MAX_TOTAL_EXTENSION_MM)
    assert extensionProblem(0, 0) is ExtensionProblem.NOTHING_TO_ADD
    assert extensionProblem(0, MAX_TOTAL_EXTENSION_MM) is None
    assert extensionProblem(800, 800) is ExtensionProblem.TALLER_THAN_A_BODY
    ui = ElementTree.parse(MODULE / "Resources" / "UI" / "FOVCompletion.ui").getroot()
    maxima = {
        names[0]: float(
            [p for p in widget.findall("property") if p.get("name") == "maximum"][0].findtext("double")
        )
        for widget in ui.iter("widget")
        if (
            names := [
                p.findtext("string")
                for p in widget.findall("property")
                if p.get("name") == "SlicerParameterName"
            ]
        )
        and names[0] in ("extendSuperiorMm", "extendInferiorMm")
    }
    assert maxima == {"extendSuperiorMm": EXTENSION_RANGE[1], "extendInferiorMm": EXTENSION_RANGE[1]}
