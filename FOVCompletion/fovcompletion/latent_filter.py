"""A Gaussian low-pass over a latent batch's rows and columns: for guidance that should steer a completion's
layout but not its fine texture (the guide-alone steps of `sampling.LatentInpainter`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_low_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (batch, channels, rows, columns) blurred by a Gaussian of `sigma` pixels along rows and columns, each
    channel on its own, in float32 even under autocast (guidance is combined at full precision). The edges are
    padded by replication, so a constant field stays constant, at any size. sigma 0: x."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        padded = F.pad(x.float(), (radius, radius, radius, radius), mode="replicate")
        along_columns = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        return F.conv2d(along_columns, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
