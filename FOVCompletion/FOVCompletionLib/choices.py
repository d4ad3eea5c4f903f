"""The panel's multiple-choice settings, as enums the parameter node stores by name.

A `label` method gives the text the combo box shows (Slicer's enum connector looks for it).
"""

from __future__ import annotations

import enum


def translate(context: str, text: str) -> str:
    """Slicer's `slicer.i18n.translate` where it exists (the panel), else the English text (tests, plain Python):
    the labels are shown by the parameter node's enum connector, which does not translate them itself."""
    try:
        from slicer.i18n import translate as slicerTranslate
    except ImportError:
        return text
    return slicerTranslate(context, text)


class SliceSelection(enum.Enum):
    """How the sagittal slices to complete are chosen."""

    CENTRED_COUNT = "count"
    RANGE = "range"

    def label(self) -> str:
        return {
            "count": translate("FOVCompletion", "Centred on the middle"),
            "range": translate("FOVCompletion", "Range"),
        }[self.value]


class ComputeDevice(enum.Enum):
    """Where the engine runs; `value` is the engine's --device argument."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"

    def label(self) -> str:
        return {
            "auto": translate("FOVCompletion", "Automatic (GPU if available)"),
            "cpu": translate("FOVCompletion", "CPU"),
            "cuda": translate("FOVCompletion", "CUDA (NVIDIA GPU)"),
            "mps": translate("FOVCompletion", "MPS (Apple GPU)"),
        }[self.value]
