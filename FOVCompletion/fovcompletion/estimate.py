"""Run-time estimates shown before a run (Slicer's steps field, the command line's first line)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .bundle import BundleMetadata, read_metadata
from .layout import CanvasLayout, plan_layout
from .progress import format_seconds
from .schedule import SamplerOptions, count_model_evaluations, unet_batch_size

FALLBACK_SECONDS_PER_STEP_PER_SLICE = {"cpu": 0.1, "cuda": 0.005, "mps": 0.03}


@dataclass(frozen=True)
class RunEstimate:
    """UNet steps x seconds per step; `measured` is False when the bundle has no speed for the device."""

    unet_steps: int
    seconds_per_step: float
    measured: bool

    @property
    def seconds(self) -> float:
        return self.unet_steps * self.seconds_per_step

    def describe(self) -> str:
        source = "measured" if self.measured else "a guess: not measured on this device"
        return f"estimated {format_seconds(self.seconds)} ({self.seconds_per_step:.3g} s per UNet step, {source})"


def seconds_per_call(speed: dict, batch: int, fallback_per_image: float) -> float:
    """Seconds of one UNet call on `batch` images at the measured canvas. With calls timed at two batch sizes
    (`seconds_per_unet_call`, keyed by batch) the line through them: a fixed part plus a part per image, so a
    one-slice run is not priced at the per-image cost of a five-slice one. Otherwise the per-image figure times
    the batch (a bundle timed at one batch only)."""
    calls = sorted(
        (int(size), float(seconds)) for size, seconds in speed.get("seconds_per_unet_call", {}).items()
    )
    if len(calls) >= 2:
        (small, small_seconds), (large, large_seconds) = calls[0], calls[-1]
        per_image = max(0.0, (large_seconds - small_seconds) / (large - small))
        return max(small_seconds + per_image * (batch - small), per_image * batch)
    per_image = float(speed.get("seconds_per_unet_step_per_slice", fallback_per_image))
    return per_image * batch


def guide_seconds_per_call(speed: dict, batch: int, fallback_per_image: float) -> float:
    """Seconds of one call of the autoguidance UNet on `batch` images: its own timed calls
    (`guide_seconds_per_unet_call`) where the bundle has them, else the main UNet's price for that batch (a guide
    is the smaller network, so the estimate errs long rather than short)."""
    if speed.get("guide_seconds_per_unet_call"):
        return seconds_per_call({"seconds_per_unet_call": speed["guide_seconds_per_unet_call"]}, batch, 0.0)
    return seconds_per_call(speed, batch, fallback_per_image)


def estimate_run(
    metadata: BundleMetadata,
    layout: CanvasLayout,
    batch: int,
    unet_steps: int,
    device: str = "cpu",
    guide_batch: int = 0,
) -> RunEstimate:
    """The bundle's measured seconds per UNet call on this kind of device for the run's batch (the slices,
    twice under guidance), plus its guide's call on `guide_batch` images (the slices, under autoguidance; 0:
    none), scaled by the window's area, times the steps of every window and sample."""
    kind = "cuda" if device.startswith("cuda") else ("cpu" if device == "auto" else device)
    speed = metadata.speed.get(kind, {})
    measured = "seconds_per_unet_step_per_slice" in speed
    fallback = FALLBACK_SECONDS_PER_STEP_PER_SLICE.get(kind, 0.1)
    per_call = seconds_per_call(speed, max(1, batch), fallback)
    if guide_batch > 0:
        per_call += guide_seconds_per_call(speed, guide_batch, fallback)
    measured_canvas = speed.get("canvas", list(metadata.canvas.shape))
    area_ratio = (layout.window_height * layout.width) / float(measured_canvas[0] * measured_canvas[1])
    return RunEstimate(int(unet_steps), per_call * area_ratio, measured)


def estimate_seconds(
    bundle_path: str | os.PathLike,
    slices: int,
    steps: int | None,
    extend_superior_mm: float,
    extend_inferior_mm: float,
    input_height_mm: float,
    device: str = "cpu",
    samples: int = 1,
    candidates: int | None = None,
    autoguidance: float | None = None,
) -> float:
    """Seconds for a run, from the bundle's measured speed per UNet step and slice, scaled by canvas area; every
    sample and every candidate window costs a run of its own, and autoguidance a guide call per step. Steps,
    candidates and autoguidance None: the bundle's."""
    metadata = read_metadata(bundle_path)
    steps, candidates = metadata.sampler_counts(steps, candidates)
    if autoguidance is None:
        autoguidance = metadata.guide.get("weight", 0.0)
    rows = max(1, int(round(input_height_mm / metadata.canvas.spacing_mm[0])))
    if extend_superior_mm <= 0 and extend_inferior_mm <= 0:
        return 0.0
    layout = plan_layout(metadata, rows, metadata.canvas.shape[1], extend_superior_mm, extend_inferior_mm)
    nfe = count_model_evaluations(SamplerOptions(steps=steps), metadata.scheduler.num_train_timesteps)
    batch = unet_batch_size(slices, metadata.guidance)  # the sampler's default, as the run will use it
    guide_batch = slices if metadata.guide and autoguidance > 0 else 0
    unet_steps = samples * candidates * nfe * layout.windows
    return estimate_run(metadata, layout, batch, unet_steps, device, guide_batch).seconds
