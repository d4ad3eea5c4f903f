"""Seconds per UNet step of a network at its canvas size, random weights (speed does not depend on them).

Puts the reference implementation's 254 M-parameter UNet next to the default model on the same machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..device import autocast_dtype, resolve_device
from ..networks import build_network, count_parameters, reference_unet_args
from ..schedule import guide_batch_size, unet_batch_size
from .resources import describe_device

REFERENCE_CANVAS = (1280, 512)
REFERENCE_LATENT_FACTOR = 8


def unet_step_seconds(
    unet_args: dict[str, Any],
    latent_shape: tuple[int, int],
    device: str = "auto",
    steps: int = 2,
    batch: int = 1,
    unet: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Median wall time of `steps` UNet calls on a batch of `batch` latents, after one warm-up call (the median
    shrugs off the bursts of a shared machine)."""
    torch_device = resolve_device(device)
    network = unet if unet is not None else build_network("DiffusionModelUNet", unet_args)
    network = network.to(torch_device).eval()
    z = torch.randn(batch, int(unet_args["in_channels"]), *latent_shape, device=torch_device)
    t = torch.full((batch,), 500, device=torch_device, dtype=torch.long)
    dtype = autocast_dtype(torch_device)

    def call() -> None:
        with torch.no_grad(), torch.autocast(torch_device.type, dtype=dtype, enabled=dtype is not None):
            network(z, t)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()

    call()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    per_step = statistics.median(times)
    return {
        "device": describe_device(torch_device),
        "latent": f"{latent_shape[0]}x{latent_shape[1]}",
        "batch": batch,
        "calls": steps,
        "parameters_m": round(count_parameters(network) / 1e6, 1),
        "seconds_per_unet_step_per_slice": per_step / batch,
    }


def reference_size_speed(device: str = "auto", steps: int = 2) -> dict[str, Any]:
    """The reference UNet (random weights) on its 1280 x 512 canvas, latent /8: 160 x 64 x 16."""
    latent = (REFERENCE_CANVAS[0] // REFERENCE_LATENT_FACTOR, REFERENCE_CANVAS[1] // REFERENCE_LATENT_FACTOR)
    return unet_step_seconds(reference_unet_args(), latent, device, steps)


def _timed_calls(
    args: dict, network, latent: tuple[int, int], device: str, steps: int, sizes
) -> dict[int, float]:
    """Seconds of one call of `network` on each batch size in `sizes` (`unet_step_seconds`)."""
    calls = {}
    for size in sizes:
        timed = unet_step_seconds(args, latent, device, steps, batch=size, unet=network)
        calls[size] = timed["seconds_per_unet_step_per_slice"] * size
    return calls


def bundle_speed(bundle, device: str = "auto", steps: int = 5) -> dict[str, Any]:
    """A bundle's own UNet at its canvas size, on the batch of a default run (its default slices, twice under its
    guidance) and on the smallest run's (one slice): a call costs a fixed part plus a part per image, so one image
    alone costs about twice as much per image on a CPU. The run-time estimate (`estimate.estimate_run`) draws the
    line through both calls' times (`seconds_per_unet_call`, keyed by batch) to price any run's batch. A guide
    UNet (autoguidance) is timed the same way on the slices alone (`guide_seconds_per_unet_call`): it reads each
    slice once per step, with the context."""
    metadata = bundle.metadata
    factor = metadata.latent_factor
    latent = (metadata.canvas.shape[0] // factor, metadata.canvas.shape[1] // factor)
    args = metadata.diffusion["args"]
    batch = unet_batch_size(metadata.default_slices, metadata.guidance)
    measured = unet_step_seconds(args, latent, device, steps, batch=batch, unet=bundle.unet)
    sizes = {unet_batch_size(1, metadata.guidance)} - {batch}
    calls = {batch: measured["seconds_per_unet_step_per_slice"] * batch}
    calls.update(_timed_calls(args, bundle.unet, latent, device, steps, sizes))
    measured["seconds_per_unet_call"] = {str(size): calls[size] for size in sorted(calls)}
    if bundle.guide is not None:
        sizes = {guide_batch_size(1, 1.0), guide_batch_size(metadata.default_slices, 1.0)}
        guide_calls = _timed_calls(metadata.guide["args"], bundle.guide, latent, device, steps, sizes)
        measured["guide_seconds_per_unet_call"] = {
            str(size): guide_calls[size] for size in sorted(guide_calls)
        }
    return measured
