"""Bundles with freshly initialised weights: tiny ones for tests, reference-size ones for speed benchmarks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .bundle import BundleMetadata, CanvasSpec, IntensitySpec, SchedulerSpec, save_bundle
from .conditioning import unet_input_channels
from .latent_codec import latent_channels
from .networks import autoencoder_kl_args, build_network


def tiny_autoencoder_args(latent_channels: int = 4) -> dict[str, Any]:
    """A VQ-VAE small enough for unit tests (latent /4)."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 16],
        "num_res_channels": [8, 16],
        "num_res_layers": 1,
        "downsample_parameters": [[2, 4, 1, 1]] * 2,
        "upsample_parameters": [[2, 4, 1, 1, 0]] * 2,
        "num_embeddings": 32,
        "embedding_dim": latent_channels,
    }


def tiny_kl_autoencoder_args(latent_channels: int = 4) -> dict[str, Any]:
    """An AutoencoderKL small enough for unit tests (latent /2), of the kl2 preset's family."""
    return autoencoder_kl_args([8, 16], latent_channels, norm_num_groups=8)


def tiny_unet_args(latent_channels: int = 4, conditioning: str = "none") -> dict[str, Any]:
    """A diffusion UNet small enough for unit tests, with one attention level like the real ones."""
    return {
        "spatial_dims": 2,
        "in_channels": unet_input_channels(latent_channels, conditioning),
        "out_channels": latent_channels,
        "channels": [16, 32],
        "attention_levels": [False, True],
        "num_head_channels": [0, 16],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
    }


def create_random_bundle(
    folder: str | os.PathLike,
    autoencoder_args: dict[str, Any] | None = None,
    unet_args: dict[str, Any] | None = None,
    canvas: CanvasSpec | None = None,
    name: str = "random-test-bundle",
    seed: int = 0,
    autoencoder_class: str = "VQVAE",
    **metadata: Any,
) -> Path:
    """Write a verified bundle with random weights (never for real use: its description says so)."""
    torch.manual_seed(seed)
    if autoencoder_args is None:
        kl = autoencoder_class == "AutoencoderKL"
        autoencoder_args = tiny_kl_autoencoder_args() if kl else tiny_autoencoder_args()
    spec = {"class": autoencoder_class, "args": autoencoder_args}
    conditioning = metadata.pop("conditioning", "none")
    unet_args = unet_args or tiny_unet_args(latent_channels(spec), conditioning)
    autoencoder = build_network(autoencoder_class, autoencoder_args)
    unet = build_network("DiffusionModelUNet", unet_args)
    info = BundleMetadata(
        name=name,
        autoencoder=spec,
        diffusion={"class": "DiffusionModelUNet", "args": unet_args},
        latent_scale_factor=float(metadata.pop("latent_scale_factor", 1.0)),
        conditioning=conditioning,
        weights={},
        scheduler=metadata.pop("scheduler", SchedulerSpec()),
        canvas=canvas or CanvasSpec(shape=(32, 32), spacing_mm=(2.0, 2.0)),
        intensity=metadata.pop("intensity", IntensitySpec()),
        description=metadata.pop("description", "random weights, for tests and speed measurements only"),
        **metadata,
    )
    return save_bundle(folder, info, autoencoder, unet)
