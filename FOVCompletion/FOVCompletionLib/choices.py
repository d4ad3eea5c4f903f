"""The panel's multiple-choice settings, as enums the parameter node stores by name.

A `label` method gives the text the combo box shows (Slicer's enum connector looks for it).
"""

from __future__ import annotations

import enum


class SliceSelection(enum.Enum):
    """How the sagittal slices to complete are chosen."""

    CENTRED_COUNT = "count"
    RANGE = "range"

    def label(self) -> str:
        return {"count": "Centred on the middle", "range": "Range"}[self.value]


class ComputeDevice(enum.Enum):
    """Where the engine runs; `value` is the engine's --device argument."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"

    def label(self) -> str:
        return {
            "auto": "Automatic (GPU if available)",
            "cpu": "CPU",
            "cuda": "CUDA (NVIDIA GPU)",
            "mps": "MPS (Apple GPU)",
        }[self.value]
