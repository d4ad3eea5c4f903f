"""Parsing the engine's output lines: JSON events, and everything else kept as log text."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from fovcompletion.progress import JsonLines, ProgressTracker
from FOVCompletionLib.progress_events import (
    DoneEvent,
    ErrorEvent,
    LogLine,
    ProgressEvent,
    StartEvent,
    describeProgress,
    describeStart,
    formatDuration,
    parseEngineLine,
)


def test_the_engine_s_own_json_lines_parse():
    """Round trip through the engine's emitter, so a change of its field names breaks this test."""
    stream = io.StringIO()
    emitter = JsonLines(stream)
    tracker = ProgressTracker(3, emitter)
    tracker.emit("start", "tiny: 1 window", slices=2, windows=1, samples=1, candidates=2, device="cpu")
    tracker.advance("sampling")
    tracker.advance("sampling")
    emitter.send("done", output="/t/o.nii.gz", mask="/t/m.nii.gz", spread=None, seconds=1.5)
    emitter.send("error", message="input is constant")
    events = [parseEngineLine(line) for line in stream.getvalue().splitlines()]
    start, first, second, done, error = events
    assert start == StartEvent(
        totalSteps=3, slices=2, windows=1, device="cpu", message="tiny: 1 window", candidates=2
    )
    assert isinstance(first, ProgressEvent) and (first.step, first.total, first.stage) == (1, 3, "sampling")
    assert first.etaS is not None and first.fraction == pytest.approx(1 / 3)
    assert second.step == 2
    assert done == DoneEvent(output="/t/o.nii.gz", mask="/t/m.nii.gz", spread=None, seconds=1.5)
    assert error == ErrorEvent("input is constant")


@pytest.mark.parametrize(
    "line",
    [
        "Loading weights...",
        "",
        "{not json",
        "[1, 2, 3]",
        '"a string"',
        '{"event": "unknown", "x": 1}',
        '{"no_event": true}',
        '{"event": "done"}',  # a done without output is not a result
        "Traceback (most recent call last):",
        "{" * 5000,
    ],
)
def test_anything_else_is_log_text(line):
    assert parseEngineLine(line + "\n") == LogLine(line)


def test_bad_field_values_do_not_raise():
    event = parseEngineLine(json.dumps({"event": "progress", "step": "x", "total": None, "elapsed_s": "nan"}))
    assert event == ProgressEvent(step=0, total=0, elapsedS=0.0, etaS=None, stage="", message="")
    assert event.fraction == 0.0
    assert parseEngineLine('{"event": "error"}') == ErrorEvent(
        "the engine reported an error without a message"
    )
    assert parseEngineLine('{"event": "progress", "step": 5, "total": 4, "eta_s": Infinity}').fraction == 1.0


def test_text_for_the_panel():
    assert formatDuration(None) == "--:--"
    assert formatDuration(65.4) == "01:05"
    assert formatDuration(3725) == "1:02:05"
    text = describeProgress(ProgressEvent(12, 50, 30.0, 95.0, "sampling"))
    assert text == "Step 12 of 50 - 00:30 elapsed, 01:35 left"
    assert "2 slices on cpu, 3 windows: 150 steps" in describeStart(StartEvent(150, 2, 3, "cpu"))
    best = describeStart(StartEvent(450, 2, 3, "cpu", candidates=3))
    assert "3 windows, best of 3 candidates per window: 450 steps" in best


def test_progress_events_carry_the_live_preview_file():
    """The engine's emitter puts the preview file in the progress event of the step that wrote it."""
    stream = io.StringIO()
    tracker = ProgressTracker(4, JsonLines(stream))
    tracker.advance("sampling")
    tracker.advance("sampling", preview="/work/preview.nii")
    first, second = [parseEngineLine(line) for line in stream.getvalue().splitlines()]
    assert first.preview is None and second.preview == "/work/preview.nii" and second.step == 2
    assert parseEngineLine('{"event": "progress", "step": 1, "total": 2, "preview": ""}').preview is None
