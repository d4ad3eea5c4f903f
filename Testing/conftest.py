"""Shared fixtures: tiny random-weight bundles (real MONAI networks) and small synthetic scans on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fovcompletion.bundle import Bundle, CanvasSpec, load_bundle, save_bundle
from fovcompletion.bundle_factory import create_random_bundle, tiny_unet_args
from fovcompletion.networks import build_network


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A verified bundle with tiny random networks: canvas 32 x 32 at 2 mm (64 mm windows)."""
    return create_random_bundle(tmp_path_factory.mktemp("bundles") / "tiny", name="tiny-test")


@pytest.fixture(scope="session")
def bench_bundle(tmp_path_factory) -> Path:
    """Tiny networks on a tall, coarse canvas (1024 x 256 mm at 8 mm) so the reference sampler fits a whole spine;
    its training list names sub-a and holds out sub-b, for the benchmark's subject rules."""
    canvas = CanvasSpec(shape=(128, 32), spacing_mm=(8.0, 8.0))
    folder = tmp_path_factory.mktemp("bench") / "bundle"
    training = {"scans": [{"subject": "sub-a"}], "held_out": ["sub-b"]}
    return create_random_bundle(folder, canvas=canvas, name="tiny-bench", training=training)


@pytest.fixture(scope="session")
def tiny_fixed_bundle(tmp_path_factory) -> Path:
    """Like `tiny_bundle` with a fixed-width canvas, as the reference implementation uses."""
    canvas = CanvasSpec(shape=(48, 32), spacing_mm=(2.0, 2.0), padding_value=0.0, ap_policy="fixed")
    return create_random_bundle(
        tmp_path_factory.mktemp("bundles") / "tiny-fixed", canvas=canvas, name="tiny-fixed"
    )


def with_output_weights(bundle: Bundle) -> Bundle:
    """MONAI zero-initialises the UNet's output convolution, so that a random UNet predicts nothing: give it
    weights."""
    with torch.no_grad():
        for parameter in bundle.unet.out.parameters():
            parameter.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    return bundle


GUIDE_ARGS = {**tiny_unet_args(4, "masked_latent"), "channels": [8, 16], "num_head_channels": [0, 8]}


def guide_unet(seed: int = 5) -> torch.nn.Module:
    """A guide for autoguidance: a conditioned UNet of other widths than the tiny bundles', whose output
    convolution predicts something."""
    torch.manual_seed(seed)
    unet = build_network("DiffusionModelUNet", GUIDE_ARGS)
    with torch.no_grad():
        for parameter in unet.out.parameters():
            parameter.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(seed))
    return unet.eval()


def predicting_bundle(folder: Path, **options) -> Path:
    """A random bundle (`create_random_bundle` options) whose UNet predicts something, saved to `folder`."""
    bundle = with_output_weights(
        load_bundle(create_random_bundle(folder.with_name(folder.name + "-zero"), **options))
    )
    return save_bundle(folder, bundle.metadata, bundle.autoencoder, bundle.unet)


@pytest.fixture(scope="session")
def windowed_bundle(tmp_path_factory) -> Path:
    """Tiny networks that predict something (a preview differs from the result), on 64 mm windows at 2 mm."""
    canvas = CanvasSpec(shape=(32, 32), spacing_mm=(2.0, 2.0))
    return predicting_bundle(
        tmp_path_factory.mktemp("windows") / "bundle", canvas=canvas, name="tiny-windows"
    )


def synthetic_scan(shape=(9, 40, 30), seed: int = 0) -> np.ndarray:
    """A smooth, non-constant volume with a bright band (a stand-in for discs) every 12 rows."""
    rng = np.random.default_rng(seed)
    rows = np.arange(shape[1])[None, :, None]
    cols = np.arange(shape[2])[None, None, :]
    volume = 200 + 300 * (np.sin(rows / 12 * 2 * np.pi) > 0.8) + 2 * cols + rng.normal(0, 5, shape)
    return volume.astype(np.float32)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def oblique_affine(spacing=(1.0, 1.0, 1.0), angle_deg: float = 12.0, flips=(1, 1, 1)) -> np.ndarray:
    """A sagittal-ish affine: array axes (R-L, S-I, A-P)-like with a rotation about L-R and optional flips."""
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    # axis 0 -> -x (towards left), axis 1 -> -z (towards inferior), axis 2 -> +y (anterior)
    base = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ base @ np.diag(np.array(spacing) * np.array(flips))
    affine[:3, 3] = [12.5, -30.0, 80.0]
    return affine
