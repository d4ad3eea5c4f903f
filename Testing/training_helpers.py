"""A tiny BIDS data set written as NIfTI and a tiny training configuration, for the training tests."""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from fovcompletion.bundle_factory import tiny_autoencoder_args, tiny_unet_args
from fovcompletion.training.config import TrainConfig, set_conditioning

LIA_AFFINE = np.array([[-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
SUBJECTS = {"sub-c01": "cervical", "sub-c02": "cervical", "sub-l01": "lumbar", "sub-l02": "lumbar"}


def spine_like(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Bright 'discs' every 14 rows on a gradient, so the superior-inferior direction is recognisable."""
    rng = np.random.default_rng(seed)
    rows = np.arange(shape[1])[None, :, None]
    cols = np.arange(shape[2])[None, None, :]
    image = 100 + 2.0 * rows + 200 * (np.sin(rows / 14 * 2 * np.pi + seed) > 0.7) + cols
    return (image + rng.normal(0, 3, shape)).astype(np.float32)


def write_bids(root: Path, shape: tuple[int, int, int] = (7, 72, 48)) -> Path:
    """sub-*/anat/sub-*_T2w.nii.gz (1 mm, LIA) plus participants.tsv with regions and licences."""
    lines = ["participant_id\tregion\tsource\tlicense"]
    for index, (subject, region) in enumerate(SUBJECTS.items()):
        folder = root / subject / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(spine_like(shape, index), LIA_AFFINE), str(folder / f"{subject}_T2w.nii.gz"))
        lines.append(f"{subject}\t{region}\tsynthetic test\tCC0")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(root: Path, held_out: tuple[str, ...] = ("sub-c02",)) -> TrainConfig:
    """Tiny networks, 32 x 32 windows at 2 mm, two iterations per epoch: seconds per stage on a CPU."""
    config = TrainConfig(name="tiny-trained", threads=1, device="cpu", validate_every=1, sample_every=1)
    config.data.roots = [str(root)]
    config.data.held_out = list(held_out)
    config.data.canvas = (32, 32)
    config.autoencoder.args = tiny_autoencoder_args()
    config.autoencoder.batch_size = 2
    config.autoencoder.epochs = 2
    config.autoencoder.iterations_per_epoch = 2
    config.autoencoder.adversarial_warmup_epochs = 1
    config.autoencoder.validation_windows = 4
    config.diffusion.args = tiny_unet_args()
    set_conditioning(config, "masked_latent")  # as the default preset
    config.diffusion.snr_gamma = 5.0
    config.diffusion.batch_size = 2
    config.diffusion.epochs = 2
    config.diffusion.iterations_per_epoch = 2
    config.diffusion.latent_augmentations = 1
    config.diffusion.validation_windows = 4
    config.diffusion.sample_steps = 2
    return config


def training_parser() -> argparse.ArgumentParser:
    """The three training commands, parsed as the `fovcompletion` command line parses them."""
    from fovcompletion.cli import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers(dest="command"))
    return parser


def run_training_command(command: str, run: Path, *options: str) -> int:
    """`fovcompletion COMMAND --run RUN OPTIONS...` as a small test runs it (one CPU thread, batches of 2);
    returns its exit code."""
    common = ["--run", str(run), "--threads", "1", "--device", "cpu", "--batch-size", "2"]
    args = training_parser().parse_args([command, *common, *options])
    return args.handler(args)
