"""Extension presets: how far to extend a partial scan so that the result covers the whole spine.

The whole-spine field of view is a typical adult sagittal whole-spine scan (skull base to coccyx); a preset
extends the scan by what is missing, on the side where the missing anatomy is.
"""

from __future__ import annotations

import enum

from .choices import translate

WHOLE_SPINE_FIELD_OF_VIEW_MM = 720.0


class ExtensionPreset(enum.Enum):
    WHOLE_SPINE_FROM_CERVICAL = "cervical"
    WHOLE_SPINE_FROM_THORACIC = "thoracic"
    WHOLE_SPINE_FROM_LUMBAR = "lumbar"
    CUSTOM = "custom"

    def label(self) -> str:
        return {
            "cervical": translate("FOVCompletion", "Whole spine from a cervical scan"),
            "thoracic": translate("FOVCompletion", "Whole spine from a thoracic scan"),
            "lumbar": translate("FOVCompletion", "Whole spine from a lumbar scan"),
            "custom": translate("FOVCompletion", "Custom"),
        }[self.value]


def presetExtensionMm(preset: ExtensionPreset, inputHeightMm: float) -> tuple[float, float] | None:
    """(superior, inferior) millimetres for a preset, given the scan's superior-inferior field of view.

    Custom has no values (None). A cervical scan misses what is below it, a lumbar scan what is above it,
    a thoracic scan both (split evenly).
    """
    if preset is ExtensionPreset.CUSTOM:
        return None
    missing = max(0.0, WHOLE_SPINE_FIELD_OF_VIEW_MM - max(0.0, float(inputHeightMm)))
    missing = float(round(missing))
    if preset is ExtensionPreset.WHOLE_SPINE_FROM_CERVICAL:
        return 0.0, missing
    if preset is ExtensionPreset.WHOLE_SPINE_FROM_LUMBAR:
        return missing, 0.0
    half = float(round(missing / 2.0))
    return half, missing - half


def matchingPreset(superiorMm: float, inferiorMm: float, inputHeightMm: float) -> ExtensionPreset:
    """The preset that gives exactly these values, else Custom (so editing a value shows "Custom")."""
    for preset in ExtensionPreset:
        values = presetExtensionMm(preset, inputHeightMm)
        if values is not None and abs(values[0] - superiorMm) < 0.5 and abs(values[1] - inferiorMm) < 0.5:
            return preset
    return ExtensionPreset.CUSTOM
