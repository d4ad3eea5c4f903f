"""What the UNet is trained to predict, and how much each noise level counts.

The target follows the bundle's `prediction_type`, so a model is always sampled the way it was trained.
Min-SNR-gamma weighting (Hang et al., ICCV 2023) caps the weight of the nearly noise-free timesteps, which
otherwise dominate epsilon training with small corrections; the capacity goes to the high-noise steps that
lay out the anatomy (vertebral rhythm, canal); the paper reports several times faster convergence.
"""

from __future__ import annotations

import torch

from ..schedule import PREDICTION_TYPES


def _alpha(alphas: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    return alphas.to(timesteps.device)[timesteps].float().view(-1, 1, 1, 1)


def add_noise(
    latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas: torch.Tensor
) -> torch.Tensor:
    """The forward process: latents noised to the given levels (alphas are the cumulative products)."""
    a = _alpha(alphas, timesteps)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def training_target(
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """The UNet's regression target for `prediction_type` (MONAI's scheduler names)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return latents
    if prediction_type == "v_prediction":
        a = _alpha(alphas, timesteps)
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise ValueError(
        f"unknown prediction type {prediction_type!r} (choose from {', '.join(PREDICTION_TYPES)})"
    )


def min_snr_weights(
    timesteps: torch.Tensor, alphas: torch.Tensor, gamma: float | None, prediction_type: str
) -> torch.Tensor | None:
    """Per-sample loss weights min(SNR, gamma) expressed for the target; None (all 1) when gamma is None."""
    if gamma is None:
        return None
    a = alphas.to(timesteps.device)[timesteps].double()
    snr = a / (1 - a)
    capped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        weight = capped / snr
    elif prediction_type == "v_prediction":
        weight = capped / (snr + 1)
    else:
        weight = capped
    return weight.float()
