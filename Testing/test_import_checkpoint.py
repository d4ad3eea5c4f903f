"""Importing reference checkpoints: monai-generative 0.2.x key layout in, a verified bundle out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import oblique_affine, synthetic_scan, write_nifti
from fovcompletion.bundle import CanvasSpec, load_bundle
from fovcompletion.bundle_factory import tiny_autoencoder_args, tiny_unet_args
from fovcompletion.cli import main
from fovcompletion.errors import BundleError
from fovcompletion.networks import build_network
from fovcompletion.reference_import import import_reference_checkpoints


def to_old_unet_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What monai-generative 0.2.x saved: attention projections not nested under `.attn`, `conv` not `postconv`,
    and in every attention block a `proj_attn` layer that it built but never applied (MONAI issue 7991): the
    network it ran is MONAI's with `include_fc=False`, the `proj_attn` weights random (never trained)."""
    old = {}
    for key, value in state.items():
        new_key = key
        for name in ("to_q", "to_k", "to_v"):
            new_key = new_key.replace(f".attn.{name}.", f".{name}.")
        old[new_key.replace("postconv", "conv")] = value.clone()
        if key.endswith(".attn.to_q.weight"):
            block = key.removesuffix(".attn.to_q.weight")
            old[f"{block}.proj_attn.weight"] = torch.randn(value.shape[0], value.shape[0])
            old[f"{block}.proj_attn.bias"] = torch.randn(value.shape[0])
    return old


def import_tiny(vqvae: Path, unet: Path, output: Path) -> Path:
    """`import_reference_checkpoints` of the tests' tiny networks, with a given scale factor."""
    return import_reference_checkpoints(
        vqvae, unet, output, "x", scale_factor=1.0, autoencoder_args=tiny_autoencoder_args(),
        unet_args=tiny_unet_args(),
    )  # fmt: skip


@pytest.fixture()
def reference_checkpoints(tmp_path):
    torch.manual_seed(1)
    autoencoder = build_network("VQVAE", tiny_autoencoder_args())
    unet = build_network("DiffusionModelUNet", {**tiny_unet_args(), "include_fc": False})
    old_state = to_old_unet_layout(unet.state_dict())
    assert any(".proj_attn." in k for k in old_state) and not any(".attn.to_q" in k for k in old_state)
    torch.save(autoencoder.state_dict(), tmp_path / "vqvae.pth")
    torch.save(old_state, tmp_path / "unet.pth")
    (tmp_path / "ae.json").write_text(json.dumps(tiny_autoencoder_args()))
    (tmp_path / "unet.json").write_text(json.dumps(tiny_unet_args()))
    return tmp_path, autoencoder, unet


def test_old_layout_checkpoints_import_into_an_identical_bundle(reference_checkpoints, tmp_path, capsys):
    folder, autoencoder, unet = reference_checkpoints
    code = main(
        [
            "import-checkpoint",
            "--vqvae",
            str(folder / "vqvae.pth"),
            "--unet",
            str(folder / "unet.pth"),
            "--scale-factor",
            "0.42",
            "--name",
            "imported",
            "-o",
            str(tmp_path / "bundle"),
            "--autoencoder-args",
            str(folder / "ae.json"),
            "--unet-args",
            str(folder / "unet.json"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.metadata.latent_scale_factor == pytest.approx(0.42)
    assert bundle.metadata.canvas.ap_policy == "fixed"
    intensity = bundle.metadata.intensity  # the reference's normalisation, whatever newer recipes use
    assert (intensity.lower_percentile, intensity.upper_percentile, intensity.clip) == (0.0, 95.0, True)
    assert bundle.metadata.diffusion["args"]["include_fc"] is False
    assert bundle.unet.state_dict().keys() == unet.state_dict().keys()
    for key, value in unet.state_dict().items():
        assert torch.equal(bundle.unet.state_dict()[key], value), key
    for key, value in autoencoder.state_dict().items():
        assert torch.equal(bundle.autoencoder.state_dict()[key], value), key
    # The network the reference ran: no output layer in the attention blocks, whatever proj_attn held.
    latent, timesteps = torch.randn(2, 4, 16, 16), torch.tensor([999, 10])
    with torch.no_grad():
        torch.testing.assert_close(bundle.unet(latent, timesteps), unet(latent, timesteps))


def test_scale_factor_is_computed_from_training_scans(reference_checkpoints, tmp_path):
    folder, autoencoder, _ = reference_checkpoints
    data = tmp_path / "bids" / "sub-01" / "anat"
    data.mkdir(parents=True)
    write_nifti(data / "sub-01_T2w.nii.gz", synthetic_scan((7, 60, 40)), oblique_affine())
    canvas = CanvasSpec(shape=(32, 32), spacing_mm=(2.0, 2.0), padding_value=0.0, ap_policy="fixed")
    bundle_dir = import_reference_checkpoints(
        folder / "vqvae.pth",
        folder / "unet.pth",
        tmp_path / "b",
        "computed",
        scale_data=tmp_path / "bids",
        autoencoder_args=tiny_autoencoder_args(),
        unet_args=tiny_unet_args(),
        canvas=canvas,
    )
    factor = load_bundle(bundle_dir).metadata.latent_scale_factor
    assert np.isfinite(factor) and factor > 0
    # 1/std of the unquantised latents: rescaled latents have unit variance on that data
    from fovcompletion.reference_import import canvas_batches

    batch = torch.from_numpy(
        next(canvas_batches([data / "sub-01_T2w.nii.gz"], load_bundle(bundle_dir).metadata))
    )
    with torch.no_grad():
        assert float((autoencoder.encode(batch) * factor).std(unbiased=False)) == pytest.approx(1.0, rel=1e-3)


def test_mismatched_checkpoint_is_refused(reference_checkpoints, tmp_path, capsys):
    folder, _, _ = reference_checkpoints
    bigger = dict(tiny_unet_args(), channels=[16, 48])
    (folder / "big.json").write_text(json.dumps(bigger))
    code = main(
        [
            "import-checkpoint",
            "--vqvae",
            str(folder / "vqvae.pth"),
            "--unet",
            str(folder / "unet.pth"),
            "--scale-factor",
            "1",
            "-o",
            str(tmp_path / "nope"),
            "--autoencoder-args",
            str(folder / "ae.json"),
            "--unet-args",
            str(folder / "big.json"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "does not match" in err
    assert not (tmp_path / "nope").exists()


def test_a_pickled_model_is_refused_without_torchs_advice_to_load_it_unsafely(
    reference_checkpoints, tmp_path
):
    folder, _, _ = reference_checkpoints
    torch.save(
        build_network("DiffusionModelUNet", tiny_unet_args()), folder / "whole.pth"
    )  # a model, pickled
    with pytest.raises(BundleError, match="pickled objects, not only tensors") as refused:
        import_tiny(folder / "vqvae.pth", folder / "whole.pth", tmp_path / "b")
    assert "weights_only" not in str(refused.value) and not (tmp_path / "b").exists()


def test_checkpoint_with_missing_keys_is_refused(reference_checkpoints, tmp_path):
    folder, _, _ = reference_checkpoints
    state = torch.load(folder / "unet.pth", weights_only=True)
    state.pop(next(key for key in state if key.startswith("out.")))
    torch.save(state, folder / "partial.pth")
    with pytest.raises(BundleError, match="keys missing"):
        import_tiny(folder / "vqvae.pth", folder / "partial.pth", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_in_monais_own_layout_keeps_the_output_layer_it_has(tmp_path):
    """A UNet saved by MONAI itself (attention under `.attn`, an output layer `out_proj`) imports as it is: the
    checkpoint's keys, not the reference's default, say whether its attention blocks have that layer."""
    torch.manual_seed(2)
    autoencoder = build_network("VQVAE", tiny_autoencoder_args())
    unet = build_network("DiffusionModelUNet", tiny_unet_args())  # MONAI's default: include_fc
    assert any(".attn.out_proj." in key for key in unet.state_dict())
    torch.save(autoencoder.state_dict(), tmp_path / "vqvae.pth")
    torch.save(unet.state_dict(), tmp_path / "unet.pth")
    bundle = load_bundle(import_tiny(tmp_path / "vqvae.pth", tmp_path / "unet.pth", tmp_path / "b"))
    assert bundle.metadata.diffusion["args"]["include_fc"] is True
    for key, value in unet.state_dict().items():
        assert torch.equal(bundle.unet.state_dict()[key], value), key
