"""Run-time estimates shown before a run (Slicer's steps field, the command line's first line)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .bundle import BundleMetadata, read_metadata
from .layout import CanvasLayout, plan_layout
from .progress import format_seconds
from .schedule import (
    SamplerOptions,
    count_model_evaluations,
    guide_alone_share,
    guide_batch_size,
    unet_batch_size,
)

FALLBACK_SECONDS_PER_STEP_PER_SLICE = {"cpu": 0.1, "cuda": 0.005, "mps": 0.03}


@dataclass(frozen=True)
class RunEstimate:
    """UNet steps x seconds per step; `measured` is False when the bundle has no speed for the device, and
    `guide_untimed` True when a guide it has no timing for was priced at the UNet's."""

    unet_steps: int
    seconds_per_step: float
    measured: bool
    guide_untimed: bool = False

    @property
    def seconds(self) -> float:
        return self.unet_steps * self.seconds_per_step

    def describe(self) -> str:
        source = "measured" if self.measured else "a guess: not measured on this device"
        if self.measured and self.guide_untimed:
            source += "; the guide not timed, priced as the UNet"
        return f"estimated {format_seconds(self.seconds)} ({self.seconds_per_step:.3g} s per UNet step, {source})"


def seconds_per_call(calls: dict, batch: int, per_image: float) -> float:
    """Seconds of one network call on `batch` images at the measured canvas, from its timed calls ({batch:
    seconds}). With two or more, the line through the smallest and largest: a fixed part plus a part per image, so
    a one-slice run is not priced at the per-image cost of a five-slice one. With one, its seconds per image; with
    none, `per_image`, times the batch."""
    timed = sorted((int(size), float(seconds)) for size, seconds in calls.items())
    if len(timed) >= 2:
        (small, small_seconds), (large, large_seconds) = timed[0], timed[-1]
        slope = max(0.0, (large_seconds - small_seconds) / (large - small))
        return max(small_seconds + slope * (batch - small), slope * batch)
    if timed:
        per_image = timed[0][1] / timed[0][0]
    return per_image * batch


def estimate_run(
    metadata: BundleMetadata,
    layout: CanvasLayout,
    batch: int,
    unet_steps: int,
    device: str = "cpu",
    guide_batch: int = 0,
    guide_alone_share: float = 0.0,
) -> RunEstimate:
    """The bundle's measured seconds per UNet call on this kind of device for the run's batch (the slices,
    twice under guidance), plus its guide's call on `guide_batch` images (the slices, under autoguidance; 0:
    none), scaled by the window's area, times the steps of every window and sample. `guide_alone_share` of the
    steps run the UNet on half the batch (`schedule.guide_alone_share`)."""
    kind = "cuda" if device.startswith("cuda") else ("cpu" if device == "auto" else device)
    speed = metadata.speed.get(kind, {})
    measured = "seconds_per_unet_step_per_slice" in speed
    per_image = float(
        speed.get("seconds_per_unet_step_per_slice", FALLBACK_SECONDS_PER_STEP_PER_SLICE.get(kind, 0.1))
    )
    unet_calls = speed.get("seconds_per_unet_call", {})
    per_call = seconds_per_call(unet_calls, max(1, batch), per_image)
    if guide_alone_share > 0:
        alone = seconds_per_call(unet_calls, max(1, batch // 2), per_image)
        per_call += guide_alone_share * (alone - per_call)
    guide_calls = speed.get("guide_seconds_per_unet_call")
    guide_untimed = guide_batch > 0 and not guide_calls
    if guide_batch > 0:
        # The guide's own timed calls; untimed, the UNet's price (the larger network): long rather than short.
        per_call += seconds_per_call(guide_calls or unet_calls, guide_batch, per_image)
    measured_canvas = speed.get("canvas", list(metadata.canvas.shape))
    area_ratio = (layout.window_height * layout.width) / float(measured_canvas[0] * measured_canvas[1])
    return RunEstimate(int(unet_steps), per_call * area_ratio, measured, guide_untimed)


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
        autoguidance = metadata.autoguidance
    rows = max(1, int(round(input_height_mm / metadata.canvas.spacing_mm[0])))
    if extend_superior_mm <= 0 and extend_inferior_mm <= 0:
        return 0.0
    layout = plan_layout(metadata, rows, metadata.canvas.shape[1], extend_superior_mm, extend_inferior_mm)
    autoguidance = autoguidance if metadata.guide else 0.0
    default = SamplerOptions(  # the sampler's defaults, as the run will use them
        steps=steps,
        guidance=metadata.guidance,
        autoguidance=autoguidance,
        guide_alone_from=metadata.guide_alone_from,
    )
    timesteps = metadata.scheduler.num_train_timesteps
    nfe = count_model_evaluations(default, timesteps)
    batch = unet_batch_size(slices, metadata.guidance)
    guide_batch = guide_batch_size(slices, autoguidance)
    unet_steps = samples * candidates * nfe * layout.windows
    share = guide_alone_share(default, timesteps)
    return estimate_run(metadata, layout, batch, unet_steps, device, guide_batch, share).seconds
