"""The engine's output lines as events: start, progress, done, error, or plain log text.

With `--progress json` the engine prints one JSON object per line on stdout; anything else (warnings, library
messages, a traceback) is log text. Parsing never raises: an unexpected line is shown in the log, not lost.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class StartEvent:
    totalSteps: int
    slices: int
    windows: int
    device: str
    message: str = ""
    candidates: int = 1  # completions drawn per window, the best kept


@dataclass(frozen=True)
class ProgressEvent:
    step: int
    total: int
    elapsedS: float
    etaS: float | None
    stage: str
    message: str = ""
    preview: str | None = None  # the live preview file the engine has just written (--preview-every)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


@dataclass(frozen=True)
class DoneEvent:
    output: str
    mask: str | None
    spread: str | None
    seconds: float


@dataclass(frozen=True)
class ErrorEvent:
    message: str


@dataclass(frozen=True)
class LogLine:
    text: str


# Evaluated at import time, so `typing.Union` and not `X | Y` (Python 3.9, Slicer 5.8).
EngineEvent = Union[StartEvent, ProgressEvent, DoneEvent, ErrorEvent, LogLine]


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _float(value, default: float | None = 0.0) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _text(value) -> str:
    return "" if value is None else str(value)


def _optionalText(value) -> str | None:
    return None if value in (None, "") else str(value)


def parseEngineLine(line: str) -> EngineEvent:
    """One line of engine output -> an event; anything that is not a known JSON event is a LogLine."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if not stripped.startswith("{"):
        return LogLine(text)
    try:
        data = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        return LogLine(text)
    if not isinstance(data, dict):
        return LogLine(text)
    kind = data.get("event")
    if kind == "start":
        return StartEvent(
            totalSteps=_int(data.get("total_steps")),
            slices=_int(data.get("slices")),
            windows=_int(data.get("windows"), 1),
            device=_text(data.get("device")),
            message=_text(data.get("message")),
            candidates=_int(data.get("candidates"), 1),
        )
    if kind == "progress":
        return ProgressEvent(
            step=_int(data.get("step")),
            total=_int(data.get("total")),
            elapsedS=_float(data.get("elapsed_s")),
            etaS=_float(data.get("eta_s"), None),
            stage=_text(data.get("stage")),
            message=_text(data.get("message")),
            preview=_optionalText(data.get("preview")),
        )
    if kind == "done" and data.get("output"):
        return DoneEvent(
            output=str(data["output"]),
            mask=_optionalText(data.get("mask")),
            spread=_optionalText(data.get("spread")),
            seconds=_float(data.get("seconds")),
        )
    if kind == "error":
        return ErrorEvent(_text(data.get("message")) or "the engine reported an error without a message")
    return LogLine(text)


def formatDuration(seconds: float | None) -> str:
    """The engine's own duration format, so the panel and the command line read alike."""
    from fovcompletion.progress import format_seconds

    return format_seconds(seconds)


def describeProgress(event: ProgressEvent) -> str:
    """The progress bar's text: step, elapsed time and time left."""
    return (
        f"Step {event.step} of {event.total} - {formatDuration(event.elapsedS)} elapsed, "
        f"{formatDuration(event.etaS)} left"
    )


def describeStart(event: StartEvent) -> str:
    slices = f"{event.slices} slice{'s' if event.slices != 1 else ''}"
    windows = f", {event.windows} windows" if event.windows > 1 else ""
    candidates = f", best of {event.candidates} candidates per window" if event.candidates > 1 else ""
    where = event.device or "the default device"
    return f"Completing {slices} on {where}{windows}{candidates}: {event.totalSteps} steps"
