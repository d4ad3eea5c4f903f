"""The engine's command line, as the background process runs it: `PythonSlicer -m fovcompletion complete ...`.

The options are validated here, before any file is written, so that a wrong value gets one clear message in
the panel instead of an engine error after the input was exported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Needs numpy only (which Slicer ships), not the engine's dependencies: the same checks as the engine's Python API.
from fovcompletion.arguments import MAX_SEED as MAXIMUM_SEED  # the engine's own limits, not copies
from fovcompletion.arguments import MAX_TOTAL_EXTENSION_MM as MAXIMUM_TOTAL_EXTENSION_MM
from fovcompletion.arguments import is_finite_number, is_whole_number

MODULE_DIR = Path(__file__).resolve().parent.parent  # holds fovcompletion/ (the engine) and Resources/
MAXIMUM_STEPS = 1000
DEVICE_NAME = re.compile(r"auto|cpu|cuda|cuda:[0-9]+|mps")


@dataclass(frozen=True)
class CompletionOptions:
    """What to complete and how. `sliceRange` is (first, stop) with stop excluded, along the input's L-R axis."""

    slices: int | None = None
    sliceRange: tuple[int, int] | None = None
    steps: int | None = None  # None: the model's setting
    extendSuperiorMm: float = 0.0
    extendInferiorMm: float = 0.0
    seed: int = 0
    samples: int = 1
    candidates: int | None = None  # completions per window, the best canal kept (None: the model's setting)
    device: str = "auto"
    model: str | None = None
    previewEvery: int = 0  # live preview every N steps (0: off)

    def validate(self, sagittalSliceCount: int | None = None) -> None:
        """Raise ValueError with one sentence the user can act on."""
        self._checkTypes()
        if self.slices is not None and self.sliceRange is not None:
            raise ValueError("choose either a number of slices or a slice range, not both")
        if self.slices is not None and self.slices < 1:
            raise ValueError(f"the number of slices must be at least 1 (got {self.slices})")
        if self.slices is not None and sagittalSliceCount is not None and self.slices > sagittalSliceCount:
            raise ValueError(
                f"{self.slices} slices requested but the input has only {sagittalSliceCount} sagittal slices"
            )
        if self.sliceRange is not None:
            first, stop = self.sliceRange
            shown = (
                f"slices {first} to {stop - 1} (the range {first}:{stop})"  # as the panel shows it, as given
            )
            if first < 0 or stop <= first:
                raise ValueError(
                    f"{shown} is empty or negative: the last slice must not come before the first"
                )
            if sagittalSliceCount is not None and stop > sagittalSliceCount:
                raise ValueError(
                    f"{shown} goes past the input's {sagittalSliceCount} sagittal slices "
                    f"(0 to {sagittalSliceCount - 1})"
                )
        if self.steps is not None and not 1 <= self.steps <= MAXIMUM_STEPS:
            raise ValueError(f"the number of steps must be between 1 and {MAXIMUM_STEPS} (got {self.steps})")
        if self.samples < 1:
            raise ValueError(f"the number of samples must be at least 1 (got {self.samples})")
        if self.candidates is not None and self.candidates < 1:
            raise ValueError(f"the number of candidates must be at least 1 (got {self.candidates})")
        if self.previewEvery < 0:
            raise ValueError(
                f"the preview interval must be 0 (off) or a number of steps (got {self.previewEvery})"
            )
        if self.extendSuperiorMm < 0 or self.extendInferiorMm < 0:
            raise ValueError("the extensions must be zero or positive millimetres")
        if self.extendSuperiorMm == 0 and self.extendInferiorMm == 0:
            raise ValueError("nothing to complete: extend the field of view superiorly and/or inferiorly")
        total = self.extendSuperiorMm + self.extendInferiorMm
        if total > MAXIMUM_TOTAL_EXTENSION_MM:
            raise ValueError(
                f"extending by {total:g} mm in all is more than any body needs: at most "
                f"{MAXIMUM_TOTAL_EXTENSION_MM:g} mm above and below together"
            )
        if not 0 <= self.seed < MAXIMUM_SEED:
            raise ValueError(f"the seed must be a whole number from 0 to 2**64 - 1 (got {self.seed!r})")

    def _checkTypes(self) -> None:
        """Refuse a value of the wrong type (console API) as the engine's parser would, with one line, before the
        range checks: a string would raise a TypeError there, and 2.5 steps or samples would be rounded down
        silently when the command line is built."""
        counts = {
            "number of slices": self.slices,
            "number of steps": self.steps,
            "number of samples": self.samples,
            "number of candidates": self.candidates,
            "preview interval": self.previewEvery,
            "seed": self.seed,
        }
        optional = ("number of slices", "number of steps", "number of candidates")
        for what, value in counts.items():
            if not (is_whole_number(value) or (value is None and what in optional)):
                raise ValueError(f"the {what} must be a whole number (got {value!r})")
        if self.sliceRange is not None and not (
            isinstance(self.sliceRange, (tuple, list))
            and len(self.sliceRange) == 2
            and all(map(is_whole_number, self.sliceRange))
        ):
            raise ValueError(f"the slice range must be two whole numbers (got {self.sliceRange!r})")
        for what, value in (("superior", self.extendSuperiorMm), ("inferior", self.extendInferiorMm)):
            if not is_finite_number(value):
                raise ValueError(f"the {what} extension must be finite millimetres (got {value!r})")
        if not isinstance(self.device, str) or not DEVICE_NAME.fullmatch(self.device):
            raise ValueError(f"unknown device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")
        if self.model is not None and not isinstance(self.model, (str, os.PathLike)):
            raise ValueError(f"the model must be a bundle name or folder (got {self.model!r})")


def buildCompletionCommand(
    pythonExecutable: str | os.PathLike,
    inputPath: str | os.PathLike,
    outputPath: str | os.PathLike,
    options: CompletionOptions,
    maskPath: str | os.PathLike | None = None,
    spreadPath: str | os.PathLike | None = None,
    previewPath: str | os.PathLike | None = None,
) -> list[str]:
    """Arguments for subprocess (no shell): the engine's `complete` command with JSON progress on stdout, and
    cancellation through its stdin (see background_process.BackgroundProcess.cancel). With `previewPath` and
    `options.previewEvery` N > 0 the engine writes its live preview there every N steps."""
    options.validate()
    command = [
        str(pythonExecutable),
        "-m",
        "fovcompletion",
        "complete",
        str(inputPath),
        "-o",
        str(outputPath),
    ]
    if maskPath is not None:
        command += ["--mask-output", str(maskPath)]
    if spreadPath is not None and options.samples > 1:
        command += ["--spread-output", str(spreadPath)]
    if options.model:
        command += ["--model", str(options.model)]
    if previewPath is not None and options.previewEvery > 0:
        command += ["--preview-every", str(int(options.previewEvery)), "--preview-volume", str(previewPath)]
    if options.slices is not None:
        command += ["--slices", str(int(options.slices))]
    elif options.sliceRange is not None:
        command += ["--slice-range", f"{int(options.sliceRange[0])}:{int(options.sliceRange[1])}"]
    if options.steps is not None:
        command += ["--steps", str(int(options.steps))]
    if options.candidates is not None:
        command += ["--candidates", str(int(options.candidates))]
    command += [
        "--extend-superior",
        repr(float(options.extendSuperiorMm)),
        "--extend-inferior",
        repr(float(options.extendInferiorMm)),
        "--seed",
        str(int(options.seed)),
        "--samples",
        str(int(options.samples)),
        "--device",
        options.device,
        "--progress",
        "json",
        "--watch-stdin",  # stop on a `cancel` line or when the pipe closes (Slicer cancelled, quit or crashed)
    ]
    return command


def buildBundleCheckCommand(pythonExecutable: str | os.PathLike, folder: str | os.PathLike) -> list[str]:
    """Arguments for subprocess: the engine loads the bundle's networks with its weights (`models --check`), the
    one check of a bundle that needs torch, which the GUI process keeps out."""
    return [str(pythonExecutable), "-m", "fovcompletion", "models", "--check", str(folder)]


def engineEnvironment(
    baseEnvironment: Mapping[str, str] | None = None, moduleDir: str | os.PathLike = MODULE_DIR
) -> dict[str, str]:
    """The child's environment: the module folder first on PYTHONPATH (so `-m fovcompletion` finds the engine
    shipped with the extension), unbuffered UTF-8 output so progress lines arrive as they are printed."""
    environment = dict(os.environ if baseEnvironment is None else baseEnvironment)
    existing = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(moduleDir), existing) if p)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONIOENCODING"] = "utf-8"
    return environment
