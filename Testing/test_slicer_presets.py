"""Extension presets and the panel's enums."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from fovcompletion.device import DEVICE_CHOICES
from FOVCompletionLib.choices import ComputeDevice, SliceSelection
from FOVCompletionLib.presets import (
    WHOLE_SPINE_FIELD_OF_VIEW_MM,
    ExtensionPreset,
    matchingPreset,
    presetExtensionMm,
)


def test_presets_complete_to_a_whole_spine_on_the_missing_side():
    assert presetExtensionMm(ExtensionPreset.WHOLE_SPINE_FROM_CERVICAL, 220.0) == (0.0, 500.0)
    assert presetExtensionMm(ExtensionPreset.WHOLE_SPINE_FROM_LUMBAR, 300.0) == (420.0, 0.0)
    superior, inferior = presetExtensionMm(ExtensionPreset.WHOLE_SPINE_FROM_THORACIC, 301.0)
    assert superior + inferior + 301.0 == pytest.approx(WHOLE_SPINE_FIELD_OF_VIEW_MM, abs=1)
    assert abs(superior - inferior) <= 1
    assert presetExtensionMm(ExtensionPreset.CUSTOM, 200.0) is None
    assert presetExtensionMm(ExtensionPreset.WHOLE_SPINE_FROM_CERVICAL, 2000.0) == (0.0, 0.0)


def test_edited_values_show_custom():
    assert matchingPreset(0.0, 500.0, 220.0) is ExtensionPreset.WHOLE_SPINE_FROM_CERVICAL
    assert matchingPreset(420.0, 0.0, 300.0) is ExtensionPreset.WHOLE_SPINE_FROM_LUMBAR
    assert matchingPreset(10.0, 500.0, 220.0) is ExtensionPreset.CUSTOM


def test_enums_have_labels_and_match_the_engine():
    for enum_type in (ExtensionPreset, SliceSelection, ComputeDevice):
        labels = [member.label() for member in enum_type]
        assert all(labels) and len(set(labels)) == len(labels)
    assert {device.value for device in ComputeDevice} == set(DEVICE_CHOICES)


def test_labels_go_through_slicers_translation_where_it_exists(monkeypatch):
    """The parameter node's enum connector shows `label()` as it is: the labels must be translated themselves,
    in the module's context as the panel's `_()` strings are (plain English where there is no `slicer.i18n`)."""
    english = {
        member: member.label()
        for enum_type in (ExtensionPreset, SliceSelection, ComputeDevice)
        for member in enum_type
    }
    asked = []

    def translate(context, text):
        asked.append(context)
        return f"<{text}>"

    monkeypatch.setitem(sys.modules, "slicer.i18n", types.SimpleNamespace(translate=translate))
    for member, text in english.items():
        assert member.label() == f"<{text}>"
    assert set(asked) == {"FOVCompletion"}
