"""Residual latent channels (`residual_latent`): a bundle's latent widened by a second encoder's channels, with its
own channels, its decoder's output and its UNet's predictions for them unchanged at the start, through the
training commands to a bundle that completes a scan."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from training_helpers import LIA_AFFINE, run_training_command, tiny_config, training_parser, write_bids

from conftest import synthetic_scan, write_nifti
from fovcompletion.bundle import load_bundle
from fovcompletion.bundle_factory import tiny_autoencoder_args, tiny_unet_args
from fovcompletion.conditioning import conditioned_input
from fovcompletion.errors import BundleError, InputError
from fovcompletion.latent_codec import latent_channels
from fovcompletion.networks import build_from_spec, build_network
from fovcompletion.pipeline import complete_file
from fovcompletion.residual_latent import (
    apply_residual_factors,
    residual_spread_factors,
    widen_autoencoder_state,
    widen_unet_state,
)
from fovcompletion.training.autoencoder import train_autoencoder
from fovcompletion.training.checkpoints import LAST, load_checkpoint
from fovcompletion.training.diffusion import train_diffusion
from fovcompletion.training.export import export_bundle
from fovcompletion.training.initialise import adopt_bundle_autoencoder, adopt_bundle_unet


def _spec(residual: int | None = 3, codebook: bool = False) -> dict:
    spec = {"class": "VQVAE", "args": tiny_autoencoder_args(), "codebook": codebook}
    if residual is not None:
        spec["residual"] = {"latent_channels": residual}
    return spec


def _widened_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    base = build_from_spec(_spec(None)).eval()
    widened = build_from_spec(_spec(3)).eval()
    widened.load_state_dict(widen_autoencoder_state(widened, base.state_dict()))
    return base, widened


def test_a_widened_autoencoder_starts_as_the_one_it_widens():
    """The base channels are the base encoder's and the decoder ignores the new ones until it learns them."""
    base, widened = _widened_pair()
    pixels = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        latent = widened.encode_stage_2_inputs(pixels)
        assert latent.shape == (2, 4 + 3, 8, 8)
        assert torch.equal(latent[:, :4], base.encode_stage_2_inputs(pixels))
        assert latent[:, 4:].abs().sum() > 0  # the residual encoder says something
        assert torch.equal(widened.decode_stage_2_outputs(latent), base.decode_stage_2_outputs(latent[:, :4]))


def test_matching_the_residual_spread_rescales_the_latent_and_not_the_image():
    _, widened = _widened_pair()
    with torch.no_grad():  # a decoder that uses the new channels, as after training
        first = next(m for m in widened.decoder.modules() if isinstance(m, torch.nn.Conv2d))
        first.weight[:, 4:] = torch.randn_like(first.weight[:, 4:]) * 0.1
    pixels = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        before = widened.decode_stage_2_outputs(widened.encode_stage_2_inputs(pixels))
        factors = residual_spread_factors(widened, [pixels[:2], pixels[2:]])
        apply_residual_factors(widened, factors)
        latent = widened.encode_stage_2_inputs(pixels)
        after = widened.decode_stage_2_outputs(latent)
    assert factors.shape == (3,) and not torch.allclose(factors, torch.ones(3))
    spread = latent.transpose(0, 1).flatten(1).std(dim=1)
    assert torch.allclose(spread[4:], spread[:4].mean().expand(3), rtol=1e-4)
    assert torch.allclose(after, before, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["masked_latent", "none"])
def test_a_widened_unet_predicts_the_old_channels_as_before_and_nothing_for_the_new(conditioning):
    torch.manual_seed(1)
    narrow = build_network("DiffusionModelUNet", tiny_unet_args(4, conditioning)).eval()
    for parameter in narrow.parameters():  # MONAI zero-initialises the output convolution
        torch.nn.init.normal_(parameter, std=0.05)
    wide = build_network("DiffusionModelUNet", tiny_unet_args(7, conditioning)).eval()
    wide.load_state_dict(widen_unet_state(wide, narrow.state_dict(), 4, conditioning))
    noisy, known = torch.randn(2, 7, 8, 8), torch.randn(2, 7, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    t = torch.tensor([100, 700])
    with torch.no_grad():
        if conditioning == "none":
            old, new = narrow(noisy[:, :4], t), wide(noisy, t)
        else:
            old = narrow(conditioned_input(noisy[:, :4], known[:, :4], mask), t)
            new = wide(conditioned_input(noisy, known, mask), t)
    assert torch.allclose(new[:, :4], old, atol=1e-5)
    assert torch.equal(new[:, 4:], torch.zeros_like(new[:, 4:]))


def test_residual_specs_count_their_channels_and_refuse_what_cannot_work():
    assert latent_channels(_spec(3)) == 7 and latent_channels(_spec(None)) == 4
    with pytest.raises(BundleError, match="without its codebook"):
        latent_channels(_spec(3, codebook=True))
    with pytest.raises(BundleError, match="without its codebook"):
        latent_channels(
            {"class": "AutoencoderKL", "args": {"latent_channels": 4}, "residual": {"latent_channels": 2}}
        )
    with pytest.raises(BundleError, match="at least 1"):
        latent_channels(_spec(0))
    with pytest.raises(BundleError, match="may set only"):
        latent_channels({**_spec(None), "residual": {"latent_channels": 2, "embedding_dim": 3}})
    with pytest.raises(BundleError, match="'latent_channels'"):
        latent_channels({**_spec(None), "residual": {"channels": [8, 16]}})


@pytest.fixture(scope="module")
def codebook_free_bundle(tmp_path_factory):
    """A tiny codebook-free bundle (the v1 recipe's kind), 1 epoch per stage."""
    root = write_bids(tmp_path_factory.mktemp("bids"))
    config = tiny_config(root)
    config.autoencoder.codebook = False
    config.data.intensity_clip = False
    config.autoencoder.epochs = config.diffusion.epochs = 1
    run = tmp_path_factory.mktemp("runs") / "base"
    train_autoencoder(config, run)
    train_diffusion(config, run)
    return root, export_bundle(run, tmp_path_factory.mktemp("bundles") / "base", version="0.1.0")


def test_the_training_commands_widen_a_bundle_into_one_that_completes_a_scan(codebook_free_bundle, tmp_path):
    """train-autoencoder --init-from B --residual-channels R, then train-diffusion --init-from B, then export:
    B's encoder stays bit for bit, B's UNet is widened and trained, and the bundle completes a scan."""
    root, bundle = codebook_free_bundle
    original = load_bundle(bundle)
    run = tmp_path / "residual"
    autoencoder_stage = run_training_command(
        "train-autoencoder", run, "--data", str(root), "--held-out", "sub-c02", "--init-from", str(bundle),
        *["--residual-channels", "2", "--epochs", "1", "--iterations-per-epoch", "2", "--lr", "1e-3"],
    )  # fmt: skip
    assert autoencoder_stage == 0
    tuned = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)["model"]
    for key, value in original.autoencoder.state_dict().items():
        if key.startswith("encoder."):  # the bundle's encoder, frozen: its channels stay what the UNet knows
            assert torch.equal(tuned["encoder.base." + key[len("encoder.") :]], value), key
    unet_stage = run_training_command(
        "train-diffusion", run, "--init-from", str(bundle), "--epochs", "1", "--iterations-per-epoch", "2",
        *["--latent-augmentations", "0"],
    )  # fmt: skip
    assert unet_stage == 0

    widened = load_bundle(export_bundle(run, tmp_path / "widened"))
    metadata = widened.metadata
    assert metadata.autoencoder["residual"] == {"latent_channels": 2}
    assert json.loads((widened.path / "bundle.json").read_text())["format_version"] == 4
    assert metadata.diffusion["args"]["out_channels"] == 6 and metadata.diffusion["args"]["in_channels"] == 13
    assert metadata.latent_scale_factor == original.metadata.latent_scale_factor

    # a run from the widened bundle keeps its residual channels; one that lacks them cannot take its UNet
    follow_up = tiny_config(root)
    adopt_bundle_autoencoder(follow_up, str(widened.path))
    assert follow_up.autoencoder.residual == {"latent_channels": 2}
    adopt_bundle_unet(follow_up, str(widened.path))
    assert follow_up.diffusion.args["out_channels"] == 6
    with pytest.raises(InputError, match="residual latent channels the run's autoencoder has not"):
        narrow = tiny_config(root)
        narrow.autoencoder.codebook = False
        narrow.data.intensity_clip = False
        adopt_bundle_unet(narrow, str(widened.path))
    again = training_parser().parse_args(
        ["train-autoencoder", "--run", str(tmp_path / "again"), "--init-from", str(widened.path)]
        + ["--residual-channels", "2"]
    )
    with pytest.raises(InputError, match="has residual channels already"):
        again.handler(again)

    scan = write_nifti(tmp_path / "scan.nii.gz", synthetic_scan((3, 40, 30)), LIA_AFFINE)
    before = scan.read_bytes()
    output = tmp_path / "completed.nii.gz"
    complete_file(scan, output, model=widened.path, extend_inferior_mm=20, steps=2, slices=3, device="cpu")
    completed = np.asarray(nib.load(str(output)).dataobj)
    assert completed.shape[1] == 40 + 20 and np.isfinite(completed).all()
    assert scan.read_bytes() == before


def test_residual_channels_need_a_codebook_free_bundle_to_widen(codebook_free_bundle, tmp_path):
    root, _ = codebook_free_bundle
    args = training_parser().parse_args(
        ["train-autoencoder", "--run", str(tmp_path / "r"), "--data", str(root), "--residual-channels", "2"]
    )
    with pytest.raises(InputError, match="give --init-from BUNDLE"):
        args.handler(args)
