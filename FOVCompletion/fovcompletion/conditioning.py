"""How the UNet learns about the known part of a window.

`none`: an unconditional UNet (the reference's); the sampler imposes the known latent after every step
(RePaint-style), so the model only ever sees it through the noisy sample. `masked_latent`: the UNet also
receives the known latent (zero where unknown) and the mask as extra input channels, as inpainting latent
diffusion models do; it sees the context directly, which is what makes a small model continue the spine
across the seam after a CPU-sized training run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CONDITIONING_MODES = ("none", "masked_latent")


def unet_input_channels(latent_channels: int, mode: str) -> int:
    """Input channels of the UNet: the noisy latent, plus the known latent and the mask when conditioned."""
    if mode not in CONDITIONING_MODES:
        raise ValueError(f"unknown conditioning {mode!r} (choose from {', '.join(CONDITIONING_MODES)})")
    return latent_channels if mode == "none" else 2 * latent_channels + 1


def conditioned_input(noisy: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The `masked_latent` UNet input: noisy latent, known latent zeroed where unknown, mask (B, 2C+1, h, w)."""
    import torch

    return torch.cat([noisy, known * mask, mask.to(noisy.dtype)], dim=1)


def outpainting_masks(
    inside: torch.Tensor, context_fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training masks (B, 1, h, w) shaped like the engine's windows: a band of known rows at the top or
    the bottom, half of the time exactly the bundle's context fraction, otherwise any size; one window in
    ten has no context at all. Only cells inside the scan can be known."""
    import torch

    batch, rows = inside.shape[0], inside.shape[1]
    draw = torch.rand(batch, 3, generator=generator)
    fixed = max(1, round(context_fraction * rows))
    any_size = (1 + (draw[:, 1] * (rows - 1)).to(torch.long)).clamp(max=rows - 1)
    known_rows = torch.where(draw[:, 0] < 0.5, torch.full_like(any_size, fixed), any_size)
    known_rows = torch.where(draw[:, 0] > 0.9, torch.zeros_like(known_rows), known_rows)
    index = torch.arange(rows)[None, :]
    from_top = draw[:, 2:3] < 0.5
    band = torch.where(from_top, index < known_rows[:, None], index >= rows - known_rows[:, None])
    mask = band[:, :, None].to(inside.device) & inside.bool()
    return mask[:, None].float()
