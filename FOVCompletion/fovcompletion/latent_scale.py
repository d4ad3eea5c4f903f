"""The latent scale factor: 1/std of the autoencoder's unquantised latents over training scans.

The diffusion UNet expects latents of roughly unit variance; the reference computed this factor but never
saved it with the weights, so bundles store it and `import-checkpoint`/training compute it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .latent_codec import encode


def latent_scale_factor(
    autoencoder: torch.nn.Module,
    batches: Iterable[np.ndarray | torch.Tensor],
    device: torch.device | str = "cpu",
) -> float:
    """1/std of the unquantised latents of `autoencoder` pooled over every batch (each batch: N x 1 x H x W, normalised)."""
    total, total_sq, count = 0.0, 0.0, 0
    autoencoder.eval()
    with torch.no_grad():
        for batch in batches:
            pixels = torch.as_tensor(batch, dtype=torch.float32, device=device)
            latent = encode(autoencoder, pixels, quantized=False).double()
            total += float(latent.sum())
            total_sq += float((latent**2).sum())
            count += latent.numel()
    if count == 0:
        raise ValueError("no training images to compute the latent scale factor from")
    variance = total_sq / count - (total / count) ** 2
    return float(1.0 / max(variance, 1e-12) ** 0.5)
