"""A pre-flight memory check: refuse a run that cannot fit, before the OS kills the process mid-way.

On Linux a CPU run that exhausts RAM is usually killed without a Python error, so an estimate up front
is the only way to give a clear message. The estimate is deliberately generous (activations kept for
the skip connections, plus attention matrices). The networks' weights are not in it: the check runs once the
bundle is loaded, so the free memory it compares with already excludes them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .bundle import BundleMetadata
from .errors import OutOfMemoryError
from .networks import decoder_args

if TYPE_CHECKING:
    import torch

BYTES_PER_VALUE = 4
ACTIVATION_COPIES = 12  # UNet feature maps alive at once per level (resblocks, skips, norms, temporaries)
DECODER_COPIES = 4  # VQ-VAE feature maps alive at once per level (no skips)


def unet_values_per_image(unet: dict, h: int, w: int) -> int:
    """Values alive at once in one image's UNet evaluation on an h x w latent (feature maps and attention)."""
    heads = unet.get("num_head_channels", 8)
    total = 0
    for level, channels in enumerate(unet["channels"]):
        cells = max(1, (h >> level) * (w >> level))
        total += ACTIVATION_COPIES * channels * cells
        if unet["attention_levels"][level]:
            head_channels = heads[level] if isinstance(heads, list) else heads
            n_heads = max(1, channels // max(1, head_channels))
            total += 2 * n_heads * cells * cells
    return total


def estimate_peak_bytes(
    metadata: BundleMetadata, batch: int, height: int, width: int, guide_batch: int = 0
) -> int:
    """Rough peak memory of one UNet evaluation plus decoding, for `batch` images on a height x width canvas.
    The guide (autoguidance, on `guide_batch` images) runs after the UNet's call, never beside it: the larger
    of the two counts."""
    factor = metadata.latent_factor
    h, w = height // factor, width // factor
    networks = unet_values_per_image(metadata.diffusion["args"], h, w) * batch
    if guide_batch > 0 and metadata.guide:
        networks = max(networks, unet_values_per_image(metadata.guide["args"], h, w) * guide_batch)
    # the VQ-VAE runs one slice at a time (see pipeline), so its full-resolution maps do not scale with batch;
    # its decoder, which may be wider than its encoder, holds the most
    autoencoder = sum(
        DECODER_COPIES * channels * height * width // 4**level
        for level, channels in enumerate(decoder_args(metadata.autoencoder)["channels"])
    )
    return int((networks + autoencoder) * BYTES_PER_VALUE)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device (None when it cannot be known)."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as info:
                for line in info:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def advice(device: torch.device, guided: bool = False, guide_sets_peak: bool = False) -> str:
    """What to reduce when memory runs out (shared by the pre-flight check and the run-time handler)."""
    options = ["use fewer slices (--slices)"]
    if guided:
        options.append("--guidance 1 (half the UNet's batch)")
    if guide_sets_peak:
        options.append("--autoguidance 0 (no guide UNet)")
    if device.type != "cpu":
        options.append("--device cpu")
    return " or ".join(options)


def check_memory(
    metadata: BundleMetadata,
    device: torch.device,
    batch: int,
    height: int,
    width: int,
    guided: bool = False,
    guide_batch: int = 0,
) -> None:
    """Raise OutOfMemoryError with advice when the estimate exceeds what the device has free (`batch`: images per
    UNet call, twice the slices when `guided`; `guide_batch`: per guide call, 0 without autoguidance)."""
    needed = estimate_peak_bytes(metadata, batch, height, width, guide_batch)
    free = available_bytes(device)
    if free is not None and needed > free:
        gib = 1024**3
        guide_sets_peak = needed > estimate_peak_bytes(metadata, batch, height, width)
        raise OutOfMemoryError(
            f"{batch} slice image(s) per UNet step{' (each slice twice: guidance)' if guided else ''} on a "
            f"{height}x{width} canvas need about {needed / gib:.1f} GiB but only {free / gib:.1f} GiB is free on "
            f"{device.type}: {advice(device, guided, guide_sets_peak)}"
        )
