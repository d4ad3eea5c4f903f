"""What a user watches and plots: a progress bar with ETA, a CSV log, TensorBoard when it is installed,
and PNG sample grids. Only rank 0 creates any of these."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class CsvLog:
    """Append-only CSV; the header grows if a later row brings new columns (rewritten then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, newline="") as stream:
                self.rows = list(csv.DictReader(stream))
        self.writer_tb = _tensorboard(path.parent / "tensorboard")

    def write(self, row: dict[str, Any]) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        columns: list[str] = []
        for item in self.rows:
            columns += [k for k in item if k not in columns]
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        temporary.replace(self.path)
        if self.writer_tb is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                try:
                    self.writer_tb.add_scalar(key, float(value), step)
                except (TypeError, ValueError):
                    continue
            self.writer_tb.flush()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


class Progress:
    """A text progress bar over all iterations of the run, with rate and ETA (stderr; works under nohup)."""

    def __init__(self, total: int, done: int, label: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=done,
                desc=label,
                unit="it",
                file=sys.stderr,
                dynamic_ncols=False,
                ncols=110,
                mininterval=5.0,
            )

    def update(self, **losses: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_row(row: dict[str, Any]) -> str:
    """One log line from a CSV row: `key value, ...`, floats to 4 significant digits."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def log_line(message: str, enabled: bool = True) -> None:
    """A time-stamped line on stderr, on a line of its own even while a progress bar is drawn there."""
    if enabled:
        from tqdm import tqdm

        tqdm.write(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


def save_grid(path: Path, rows: list[list[np.ndarray]], low: float = -1.0, high: float = 1.0) -> Path:
    """A PNG of image rows (each a list of 2D arrays of equal height), for quick visual checks."""
    from PIL import Image

    def to_uint8(image: np.ndarray) -> np.ndarray:
        return (np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)

    gap = 2
    lines = []
    for images in rows:
        height = max(i.shape[0] for i in images)
        padded = [np.pad(to_uint8(i), ((0, height - i.shape[0]), (0, gap))) for i in images]
        lines.append(np.pad(np.concatenate(padded, axis=1), ((0, gap), (0, 0))))
    width = max(line.shape[1] for line in lines)
    canvas = np.concatenate([np.pad(line, ((0, 0), (0, width - line.shape[1]))) for line in lines], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
