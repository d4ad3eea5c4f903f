"""Run-time estimates shown before a run (Slicer's steps field, `fovcompletion models`)."""

from __future__ import annotations

import os

from .bundle import read_metadata
from .layout import plan_layout
from .schedule import SamplerOptions, count_model_evaluations

FALLBACK_SECONDS_PER_STEP_PER_SLICE = {"cpu": 0.1, "cuda": 0.005, "mps": 0.03}


def estimate_seconds(
    bundle_path: str | os.PathLike,
    slices: int,
    steps: int,
    extend_superior_mm: float,
    extend_inferior_mm: float,
    input_height_mm: float,
    device: str = "cpu",
) -> float:
    """Seconds for a run, from the bundle's measured speed per UNet step and slice, scaled by canvas area."""
    metadata = read_metadata(bundle_path)
    device = "cuda" if device.startswith("cuda") else ("cpu" if device == "auto" else device)
    speed = metadata.speed.get(device, {})
    per_step = float(
        speed.get("seconds_per_unet_step_per_slice", FALLBACK_SECONDS_PER_STEP_PER_SLICE.get(device, 0.1))
    )
    measured_canvas = speed.get("canvas", list(metadata.canvas.shape))
    rows = max(1, int(round(input_height_mm / metadata.canvas.spacing_mm[0])))
    if extend_superior_mm <= 0 and extend_inferior_mm <= 0:
        return 0.0
    layout = plan_layout(metadata, rows, metadata.canvas.shape[1], extend_superior_mm, extend_inferior_mm)
    area_ratio = (layout.window_height * layout.width) / float(measured_canvas[0] * measured_canvas[1])
    nfe = count_model_evaluations(SamplerOptions(steps=steps), metadata.scheduler.num_train_timesteps)
    return per_step * area_ratio * max(1, slices) * nfe * layout.windows
