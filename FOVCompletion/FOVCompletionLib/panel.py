"""Rules the panel follows that do not need Qt: the parameters' ranges and the widget limits derived from them.

The parameter node refuses a value outside a field's `WithinRange`, inside the Qt slot that writes it: a spin box
allowed to go further would raise there and leave the panel and the parameter node disagreeing. So the spin-box
limits that follow the input volume are always clipped to the ranges declared here, which the parameter node
(FOVCompletion.py) declares its fields with.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .engine_command import MAXIMUM_STEPS, MAXIMUM_TOTAL_EXTENSION_MM

SLICE_COUNT_RANGE = (1, 512)  # sliceCount
SLICE_INDEX_RANGE = (0, 4095)  # sliceRangeFirst, sliceRangeLast
STEPS_RANGE = (1, MAXIMUM_STEPS)  # steps
CANDIDATES_RANGE = (1, 8)  # candidates
# extendSuperiorMm, extendInferiorMm: each, and their total (`extensionProblem`), within the engine's limit
EXTENSION_RANGE = (0.0, MAXIMUM_TOTAL_EXTENSION_MM)
DEFAULT_RANGE_HALF_WIDTH = 2  # a new input starts with the 5 middle slices


@dataclass(frozen=True)
class SliceLimits:
    """Spin-box maxima for the slice widgets, given the input's number of sagittal slices."""

    countMaximum: int
    indexMaximum: int


def sliceLimits(sagittalSlices: int) -> SliceLimits:
    """Limits for an input with `sagittalSlices` slices, never beyond the parameters' ranges. Without an input
    (0) the parameters' own ranges: a spin box whose maximum drops below its value clamps it, and the parameter
    node stores the clamped value, so a panel opened before its volume is loaded would lose the slice count."""
    count = max(0, int(sagittalSlices))
    if count == 0:
        return SliceLimits(countMaximum=SLICE_COUNT_RANGE[1], indexMaximum=SLICE_INDEX_RANGE[1])
    return SliceLimits(
        countMaximum=max(SLICE_COUNT_RANGE[0], min(count, SLICE_COUNT_RANGE[1])),
        indexMaximum=max(SLICE_INDEX_RANGE[0], min(count - 1, SLICE_INDEX_RANGE[1])),
    )


def defaultSliceRange(sagittalSlices: int) -> tuple[int, int]:
    """(first, last) of the middle slices a new input starts with, inside the input and the parameters' range."""
    limits = sliceLimits(sagittalSlices)
    middle = min(max(0, int(sagittalSlices)) // 2, limits.indexMaximum)
    first = max(SLICE_INDEX_RANGE[0], middle - DEFAULT_RANGE_HALF_WIDTH)
    return first, min(limits.indexMaximum, middle + DEFAULT_RANGE_HALF_WIDTH)


def sliceRangeForNewInput(first: int, last: int, sagittalSlices: int) -> tuple[int, int]:
    """The slice range a newly chosen input gets: the one set, where the input has those slices and it is not the
    untouched 0..0; else the input's middle slices (`defaultSliceRange`). Decided from the values set before the
    spin boxes take the new input's limits (a lowered maximum clamps a spin box's value, and the parameter node
    follows its spin box)."""
    if last == 0 or last >= sagittalSlices:
        return defaultSliceRange(sagittalSlices)
    return first, last


def modelSampling(steps: int | None, candidates: int | None) -> tuple[int, int] | None:
    """(steps, candidates) a model was measured best with, inside the parameters' ranges; None when the model
    does not say (the panel then keeps what is set)."""
    if steps is None:
        return None
    return _within(steps, STEPS_RANGE), _within(candidates or 1, CANDIDATES_RANGE)


def _within(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(int(value), bounds[1]))


class ExtensionProblem(Enum):
    """Why the extensions cannot run (the widget words it, translated)."""

    NOTHING_TO_ADD = "nothing to add"
    TALLER_THAN_A_BODY = "taller than a body"


def extensionProblem(extendSuperiorMm: float, extendInferiorMm: float) -> ExtensionProblem | None:
    """What keeps the Apply button off for these extensions, or None: the engine's own limits, checked in the
    GUI process so that the button and its tooltip say so before anything runs."""
    if extendSuperiorMm == 0 and extendInferiorMm == 0:
        return ExtensionProblem.NOTHING_TO_ADD
    if extendSuperiorMm + extendInferiorMm > MAXIMUM_TOTAL_EXTENSION_MM:
        return ExtensionProblem.TALLER_THAN_A_BODY
    return None
