"""Both autoencoder families through one codec: a continuous AutoencoderKL (v1.0) and a VQ-VAE (v0.5.0 and the
reference) encode, decode, train, export and complete alike."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from training_helpers import LIA_AFFINE, spine_like, tiny_config, write_bids

from fovcompletion.bundle import load_bundle, read_metadata
from fovcompletion.bundle_factory import (
    create_random_bundle,
    tiny_autoencoder_args,
    tiny_kl_autoencoder_args,
    tiny_unet_args,
)
from fovcompletion.errors import BundleError
from fovcompletion.latent_codec import decode, encode, latent_channels, latent_downsample_factor
from fovcompletion.networks import build_network
from fovcompletion.pipeline import complete
from fovcompletion.training.autoencoder import decode_the_mean, reconstruction_and_penalty, train_autoencoder
from fovcompletion.training.config import AutoencoderConfig, preset_config, set_conditioning
from fovcompletion.training.diffusion import train_diffusion
from fovcompletion.training.export import export_bundle

KL = {"class": "AutoencoderKL", "args": tiny_kl_autoencoder_args(3)}
VQ = {"class": "VQVAE", "args": tiny_autoencoder_args(4)}


def test_latent_geometry_of_both_families():
    assert (latent_channels(KL), latent_downsample_factor(KL)) == (3, 2)
    assert (latent_channels(VQ), latent_downsample_factor(VQ)) == (4, 4)
    with pytest.raises(BundleError, match="unsupported autoencoder class 'AutoencoderX'"):
        latent_channels({"class": "AutoencoderX", "args": {}})


def test_kl_latent_is_the_encoders_mean_and_decodes_to_the_image_grid():
    """A known region must encode the same way at every run: the mean, never a random draw."""
    torch.manual_seed(0)
    model = build_network("AutoencoderKL", KL["args"]).eval()
    pixels = torch.rand(2, 1, 16, 24)
    with torch.no_grad():
        first, second = encode(model, pixels), encode(model, pixels)
        mean, _ = model.encode(pixels)
        image = decode(model, first)
    assert first.shape == (2, 3, 8, 12) and torch.equal(first, second) and torch.equal(first, mean)
    assert image.shape == pixels.shape


def test_kl_training_can_decode_the_mean_as_the_engine_does():
    """v1.0 trains its decoder on the mean: the random draw's noise would teach it to blur."""
    torch.manual_seed(0)
    model = build_network("AutoencoderKL", KL["args"]).train()
    pixels = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        drawn = model(pixels)[0]
        engine = decode(model, encode(model, pixels))
        assert not torch.allclose(drawn, engine)
        decode_the_mean(model)
        recon, mean, sigma = model(pixels)
    assert torch.equal(recon, engine) and bool((sigma > 0).all())
    recon, penalty = reconstruction_and_penalty(
        (recon, mean, sigma), AutoencoderConfig(network="AutoencoderKL")
    )
    assert recon is not None and float(penalty) > 0


def test_vq_latent_is_quantised_only_when_the_bundle_says_so():
    torch.manual_seed(0)
    model = build_network("VQVAE", VQ["args"]).eval()
    pixels = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        raw, quantised = encode(model, pixels, quantized=False), encode(model, pixels)
        codes = model.quantize(raw)[0]
    assert torch.equal(quantised, codes) and not torch.equal(raw, quantised)


def test_engine_completes_with_a_kl_bundle(tmp_path):
    folder = create_random_bundle(
        tmp_path / "kl", autoencoder_class="AutoencoderKL", conditioning="masked_latent"
    )
    metadata = read_metadata(folder)
    assert metadata.autoencoder["class"] == "AutoencoderKL" and metadata.latent_factor == 2
    scan = spine_like((5, 40, 30), seed=3)
    result = complete(scan, LIA_AFFINE, model=folder, steps=2, extend_inferior_mm=40, slices=3, device="cpu")
    assert result.image.shape == (3, 80, 30)
    assert np.array_equal(result.image[:, :40], scan[1:4])
    assert np.isfinite(result.image).all() and result.image[:, 40:].std() > 0


def test_a_kl_run_trains_both_stages_and_exports_a_bundle_that_completes(tmp_path):
    """The v1 recipe's stage 1 (a KL autoencoder decoding its mean, the rate on a cosine) through export."""
    root = write_bids(tmp_path / "bids")
    config = tiny_config(root)
    config.autoencoder.network = "AutoencoderKL"
    config.autoencoder.args = tiny_kl_autoencoder_args(3)
    config.autoencoder.decode_mean = True  # as the v1 preset
    config.autoencoder.lr_schedule, config.autoencoder.lr_min = "cosine", 1e-5
    config.diffusion.args = tiny_unet_args(3)
    set_conditioning(config, "masked_latent")
    run = tmp_path / "run"
    train_autoencoder(config, run)
    train_diffusion(config, run)
    with open(run / "autoencoder" / "log.csv") as stream:
        rows = list(csv.DictReader(stream))
    kl_terms = [float(row["latent"]) for row in rows]
    assert all(np.isfinite(kl_terms)) and all(term > 0 for term in kl_terms)
    rates = [float(row["lr"]) for row in rows]  # the cosine reaches lr_min at the last planned iteration
    assert config.autoencoder.lr > rates[0] > rates[1] and rates[1] == pytest.approx(1e-5)
    folder = export_bundle(run, tmp_path / "bundle")
    bundle = load_bundle(folder)
    assert bundle.metadata.autoencoder["class"] == "AutoencoderKL"
    assert bundle.metadata.diffusion["args"]["out_channels"] == 3
    scan = spine_like((5, 40, 30), seed=4)
    result = complete(scan, LIA_AFFINE, model=folder, steps=2, extend_superior_mm=32, slices=1, device="cpu")
    assert result.image.shape == (1, 72, 30) and np.array_equal(result.image[:, 32:], scan[2:3])


def test_kl2_preset_uses_a_continuous_latent():
    kl2 = preset_config("kl2")
    spec = kl2.autoencoder.spec()
    assert spec["class"] == "AutoencoderKL" and latent_downsample_factor(spec) == 2
    assert kl2.diffusion.args["out_channels"] == latent_channels(spec)


def test_a_vqvae_without_its_codebook_passes_its_latents_through_unchanged():
    """`codebook: false`: the encoder's output is the latent and the decoder gets it as it is, in training and
    at inference alike; with the codebook, decoding snaps a latent to its codes."""
    from fovcompletion.networks import build_from_spec

    torch.manual_seed(0)
    free = build_from_spec({**VQ, "codebook": False}).eval()
    snapping = build_network("VQVAE", VQ["args"]).eval()
    snapping.load_state_dict(free.state_dict())
    pixels = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        latent = encode(free, pixels)  # quantised=True asked, none done
        assert torch.equal(latent, free.encoder(pixels))
        assert torch.equal(decode(free, latent), free.decoder(latent))
        assert not torch.allclose(decode(snapping, latent), free.decoder(latent))
        recon, penalty = reconstruction_and_penalty(free(pixels), AutoencoderConfig(codebook=False))
    assert torch.equal(recon, free.decoder(latent)) and float(penalty) == 0.0
    config = preset_config("v1")
    assert config.autoencoder.spec()["codebook"] is False
    assert config.preprocessing_metadata().latent_quantized is False
    assert "codebook" not in preset_config("default").autoencoder.spec()  # v0.5.0's spec, unchanged
    for bad in ({**KL, "codebook": False}, {**VQ, "codebook": "no"}):
        with pytest.raises(BundleError, match="codebook"):
            build_from_spec(bad)
