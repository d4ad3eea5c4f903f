"""Progress of long runs: events with step, elapsed time and ETA, shown as a bar or as JSON lines."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO


@dataclass(frozen=True)
class ProgressEvent:
    step: int
    total: int
    elapsed_s: float
    eta_s: float | None
    stage: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


ProgressCallback = Callable[[ProgressEvent], None]


class ProgressTracker:
    """Turns "step i of n" into events with elapsed time and a linear ETA."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = max(total, 1)
        self.callback = callback
        self.start = time.perf_counter()
        self.step = 0

    def advance(self, stage: str, message: str = "", **details: Any) -> None:
        self.step += 1
        self.emit(stage, message, **details)

    def emit(self, stage: str, message: str = "", **details: Any) -> None:
        if self.callback is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.step * (self.total - self.step) if self.step else None
        self.callback(ProgressEvent(self.step, self.total, elapsed, eta, stage, message, details))


def format_seconds(seconds: float | None) -> str:
    """`mm:ss`, or `h:mm:ss` from one hour; `--:--` when unknown (no ETA before the first step)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class TextProgressBar:
    """A one-line bar on stderr, redrawn in place: `[#####.....] 12/50 sampling 00:04<00:12`.

    When the stream is not a terminal (a log file, a batch job) carriage-return redraws would pile up into one
    line of kilobytes, so it writes a plain line instead, at most one per tenth of the run (`LOG_LINES`).
    """

    LOG_LINES = 10

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self._stream = stream
        self.width = width
        self._logged = 0  # the last tenth logged: lines at 10%, 20% ... 100%
        self._bar_open = False  # a bar is drawn on a terminal line not yet ended

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def interactive(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            return False

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "start":
            self._logged = 0
            self.stream.write(f"{event.message}\n")
            self.stream.flush()
            return
        if event.message:  # a note between steps (which candidate a window kept): a line of its own
            self.stream.write(("\n" if self._bar_open else "") + f"{event.message}\n")
            self._bar_open = False
            self.stream.flush()
            return
        if self.interactive():
            self._redraw(event)
        else:
            self._log(event)
        self.stream.flush()

    def _redraw(self, event: ProgressEvent) -> None:
        filled = int(self.width * event.fraction)
        bar = "#" * filled + "." * (self.width - filled)
        line = (
            f"\r[{bar}] {event.step}/{event.total} {event.stage} "
            f"{format_seconds(event.elapsed_s)}<{format_seconds(event.eta_s)}"
        )
        self.stream.write(line)
        self._bar_open = event.step < event.total
        if not self._bar_open:
            self.stream.write("\n")

    def _log(self, event: ProgressEvent) -> None:
        reached = event.step * self.LOG_LINES // event.total if event.total else self.LOG_LINES
        if reached <= self._logged:
            return
        self._logged = reached
        self.stream.write(
            f"{event.stage} {event.step}/{event.total} ({event.fraction:.0%}), "
            f"{format_seconds(event.elapsed_s)} elapsed, {format_seconds(event.eta_s)} left\n"
        )


class JsonLines:
    """One JSON object per line on stdout, for the Slicer module's reader thread."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def send(self, event: str, **fields: object) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "start":
            self.send("start", total_steps=event.total, message=event.message, **event.details)
            return
        fields = {k: v for k, v in asdict(event).items() if k != "details"}
        fields["elapsed_s"] = round(fields["elapsed_s"], 3)
        fields["eta_s"] = None if fields["eta_s"] is None else round(fields["eta_s"], 3)
        self.send("progress", **fields, **event.details)  # e.g. "preview": the live preview file just written
