"""Import checkpoints of the reference implementation (monai-generative 0.2.x state dicts) into a bundle."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bundle import (
    BundleMetadata,
    CanvasSpec,
    IntensitySpec,
    SchedulerSpec,
    first_mismatch,
    load_state_dict_file,
    load_weights,
    save_bundle,
)
from .errors import BundleError, InputError
from .image_io import read_volume
from .latent_scale import latent_scale_factor
from .networks import build_network, reference_autoencoder_args, reference_unet_args
from .preprocess import prepare_slab

REFERENCE_CANVAS = CanvasSpec(shape=(1280, 512), spacing_mm=(1.0, 1.0), padding_value=0.0, ap_policy="fixed")
REFERENCE_SOURCE = "spinalcordtoolbox/disc-labeling-playground (FOV generation using latent diffusion model)"


def is_old_unet_layout(state: dict[str, torch.Tensor]) -> bool:
    """A monai-generative 0.2 UNet state dict: attention projections not yet nested under `.attn`."""
    return any(
        ".proj_attn." in key or key.endswith((".to_q.weight", ".to_q.bias")) for key in state
    ) and not any(".attn.to_q." in key for key in state)


def load_old_unet_state(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a monai-generative UNet state dict (attention keys renamed in MONAI 1.4); any gap is a mismatch.

    MONAI's converter leaves keys the old dict lacks at their random initialisation, so the old keys must
    map one-to-one onto the new ones: every key consumed, none left over. monai-generative 0.2 built each
    attention block's `proj_attn` but never applied it (MONAI issue 7991): its untrained weights are dropped
    where the UNet, built with `include_fc=False` as the reference's architecture is, has no output layer.
    """
    expected = set(unet.state_dict())
    if set(state) == expected:  # already in the new layout
        load_weights(unet, state, "diffusion UNet")
        return
    if not any(key.endswith(".attn.out_proj.weight") for key in expected):
        state = {key: value for key, value in state.items() if ".proj_attn." not in key}
    remaining = dict(state)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            unet.load_old_state_dict(remaining)
    except KeyError as error:
        raise BundleError(
            f"diffusion UNet checkpoint does not match the architecture: missing key {error.args[0]!r}"
        ) from None
    except RuntimeError as error:
        raise BundleError(
            f"diffusion UNet checkpoint does not match the architecture: {first_mismatch(error)}"
        ) from None
    consumed = len(state) - len(remaining)
    if remaining or consumed != len(expected):
        detail = (
            f"unexpected key {next(iter(remaining))!r}"
            if remaining
            else f"{len(expected) - consumed} keys missing"
        )
        raise BundleError(f"diffusion UNet checkpoint does not match the architecture: {detail}")


def find_scans(root: str | os.PathLike) -> list[Path]:
    """NIfTI scans under a folder (BIDS: every sub-*/anat/*_T2w), derivatives excluded."""
    root = Path(root)
    if root.is_file():
        return [root]
    scans = sorted(p for p in root.rglob("*.nii*") if "derivatives" not in p.parts)
    bids = [p for p in scans if p.name.endswith(("_T2w.nii.gz", "_T2w.nii"))]
    return bids or scans


def canvas_batches(scans: list[Path], metadata: BundleMetadata) -> Iterator[np.ndarray]:
    """Each scan's central slices, centre cropped/padded to the canvas, as the reference prepared them."""
    height, width = metadata.canvas.shape
    for path in scans:
        slab = prepare_slab(read_volume(path), metadata).model
        canvas = np.full((slab.shape[0], 1, height, width), metadata.canvas.padding_value, dtype=np.float32)
        rows, cols = min(height, slab.shape[1]), min(width, slab.shape[2])
        r0, c0 = (slab.shape[1] - rows) // 2, (slab.shape[2] - cols) // 2
        R0, C0 = (height - rows) // 2, (width - cols) // 2
        canvas[:, 0, R0 : R0 + rows, C0 : C0 + cols] = slab[:, r0 : r0 + rows, c0 : c0 + cols]
        yield canvas


def import_reference_checkpoints(
    vqvae_path: str | os.PathLike,
    unet_path: str | os.PathLike,
    output: str | os.PathLike,
    name: str,
    scale_factor: float | None = None,
    scale_data: str | os.PathLike | None = None,
    autoencoder_args: dict[str, Any] | None = None,
    unet_args: dict[str, Any] | None = None,
    canvas: CanvasSpec = REFERENCE_CANVAS,
    licence: str = "as granted by the checkpoints' authors",
    description: str = "imported reference checkpoints",
) -> Path:
    """Write a bundle from reference checkpoints; the scale factor is given or computed from training scans."""
    if (scale_factor is None) == (scale_data is None):
        raise InputError(
            "give exactly one of a scale factor or a folder of training scans to compute it from"
        )
    autoencoder_args = autoencoder_args or reference_autoencoder_args()
    unet_state = load_state_dict_file(Path(unet_path))
    unet_args = dict(unet_args or reference_unet_args())
    # monai-generative 0.2's attention blocks had no output layer in use; a checkpoint in MONAI's own layout says
    # by its keys whether its blocks have one.
    old_layout = is_old_unet_layout(unet_state)
    unet_args["include_fc"] = not old_layout and any(".attn.out_proj." in key for key in unet_state)
    autoencoder = build_network("VQVAE", autoencoder_args)
    unet = build_network("DiffusionModelUNet", unet_args)
    load_weights(autoencoder, load_state_dict_file(Path(vqvae_path)), "VQ-VAE")
    load_old_unet_state(unet, unet_state)
    metadata = BundleMetadata(
        name=name,
        autoencoder={"class": "VQVAE", "args": autoencoder_args},
        diffusion={"class": "DiffusionModelUNet", "args": unet_args},
        latent_scale_factor=1.0,
        latent_quantized=False,  # the reference trained its UNet on the encoder's unquantised output
        weights={},
        scheduler=SchedulerSpec(),
        canvas=canvas,
        intensity=IntensitySpec(),
        description=description,
        licence=licence,
        training={"source": REFERENCE_SOURCE, "imported_from": [Path(vqvae_path).name, Path(unet_path).name]},
    )
    if scale_factor is None:
        scans = find_scans(scale_data)
        if not scans:
            raise InputError(f"no NIfTI scans found under {scale_data}")
        scale_factor = latent_scale_factor(autoencoder, canvas_batches(scans, metadata))
        metadata.training["scale_factor_from"] = f"{len(scans)} scans under {Path(scale_data).name}"
    metadata = BundleMetadata(**{**metadata.__dict__, "latent_scale_factor": float(scale_factor)})
    return save_bundle(output, metadata, autoencoder, unet)
