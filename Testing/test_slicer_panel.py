"""The slice widgets' limits follow the input volume but never leave the parameter node's ranges (issue 15, item 4):
a volume with more sagittal slices than a field accepts used to let the spin box reach a value that raised inside
the Qt slot, leaving the panel and the parameter node disagreeing."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from FOVCompletionLib.panel import SLICE_COUNT_RANGE, SLICE_INDEX_RANGE, defaultSliceRange, sliceLimits
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


def test_no_input_gives_the_smallest_limits():
    assert sliceLimits(0) == sliceLimits(-3)
    assert sliceLimits(0).countMaximum == SLICE_COUNT_RANGE[0] and sliceLimits(0).indexMaximum == 0


def test_parameter_node_declares_the_same_ranges():
    """FOVCompletion.py (which needs the application) declares its fields with these very constants."""
    tree = ast.parse((MODULE / "FOVCompletion.py").read_text(encoding="utf-8"))
    [wrapper] = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    annotations = {
        s.target.id: ast.unparse(s.annotation) for s in wrapper.body if isinstance(s, ast.AnnAssign)
    }
    assert annotations["sliceCount"] == "Annotated[int, WithinRange(*SLICE_COUNT_RANGE)]"
    for name in ("sliceRangeFirst", "sliceRangeLast"):
        assert annotations[name] == "Annotated[int, WithinRange(*SLICE_INDEX_RANGE)]"
    source = (MODULE / "FOVCompletion.py").read_text(encoding="utf-8")
    assert "spinBox.maximum = limits.indexMaximum" in source
    assert "self.ui.sliceCountSpinBox.maximum = limits.countMaximum" in source
