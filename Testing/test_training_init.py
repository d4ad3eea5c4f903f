"""Training stages started from a bundle (`--init-from`): they take the bundle's weights, architecture,
preprocessing and latent scale, record where they started, and refuse bundles they cannot continue."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import pytest
import torch
from training_helpers import run_training_command, tiny_config, training_parser, write_bids

from fovcompletion.bundle import load_bundle, load_state_dict_file
from fovcompletion.errors import FOVCompletionError, InputError
from fovcompletion.memory import estimate_peak_bytes
from fovcompletion.networks import build_from_spec
from fovcompletion.residual_latent import apply_residual_factors
from fovcompletion.training.autoencoder import train_autoencoder
from fovcompletion.training.checkpoints import LAST, load_checkpoint
from fovcompletion.training.config import set_conditioning
from fovcompletion.training.diffusion import load_trained_autoencoder, train_diffusion
from fovcompletion.training.export import export_bundle
from fovcompletion.training.initialise import adopt_bundle_autoencoder, adopt_bundle_unet, initial_weights


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A tiny run through both stages (1 epoch each), exported: the bundle later runs start from."""
    root = write_bids(tmp_path_factory.mktemp("bids"))
    run = tmp_path_factory.mktemp("runs") / "first"
    config = tiny_config(root)
    config.autoencoder.epochs = config.diffusion.epochs = 1
    train_autoencoder(config, run)
    train_diffusion(config, run)
    return root, export_bundle(run, tmp_path_factory.mktemp("bundles") / "first", version="1.2.3")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_zero_epoch_stages_from_a_bundle_export_its_own_weights(trained_bundle, tmp_path):
    """0 epochs from a bundle: the checkpoints hold its weights and scale, and re-export them bit for bit."""
    root, bundle = trained_bundle
    config = tiny_config(root)
    config.data.canvas = (64, 64)  # the bundle's canvas must win
    config.autoencoder.epochs = config.diffusion.epochs = 0
    adopt_bundle_autoencoder(config, str(bundle))
    assert config.data.canvas == (32, 32)
    run = tmp_path / "again"
    train_autoencoder(config, run)
    adopt_bundle_unet(config, str(bundle))
    train_diffusion(config, run)

    original = load_bundle(bundle)
    vqvae = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)
    unet = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert _equal(vqvae["model"], original.autoencoder.state_dict())
    assert _equal(unet["ema"], original.unet.state_dict()) and _equal(unet["model"], unet["ema"])
    assert unet["scale_factor"] == original.metadata.latent_scale_factor
    assert unet["step"] == 0 and unet["epoch"] == -1

    again = export_bundle(run, tmp_path / "bundle")
    metadata = load_bundle(again).metadata
    for role in ("autoencoder", "diffusion"):
        assert metadata.weights[role].sha256 == original.metadata.weights[role].sha256
        origin = metadata.training["config"][role]["init_from"]
        assert (origin["bundle"], origin["version"]) == (original.metadata.name, "1.2.3")
    # the same weights, the same training (a 0-epoch stage adds milliseconds, which may round up)
    for count in ("unet_steps", "autoencoder_steps"):
        assert metadata.training[count] == original.metadata.training[count], count
    for role, seconds in original.metadata.training["training_seconds"].items():
        assert metadata.training["training_seconds"][role] == pytest.approx(seconds, abs=0.5), role
    assert original.metadata.training["unet_steps"] == 2


def _unet_stage_from(bundle, common: list[str]) -> int:
    """`train-diffusion --init-from bundle --epochs 0`: the bundle's UNet taken onto the run as it is."""
    args = training_parser().parse_args(
        [
            "train-diffusion",
            *common,
            "--init-from",
            str(bundle),
            "--epochs",
            "0",
            "--latent-augmentations",
            "0",
        ]
    )
    return args.handler(args)


def test_cli_fine_tunes_from_a_bundle(trained_bundle, tmp_path):
    """train-autoencoder --init-from trains on from the bundle's VQ-VAE; the UNet stage starts from its UNet."""
    root, bundle = trained_bundle
    run = tmp_path / "fine-tune"
    common = ["--run", str(run), "--threads", "1", "--device", "cpu", "--batch-size", "2"]
    fine_tuned = run_training_command(
        "train-autoencoder", run, "--data", str(root), "--held-out", "sub-c02", "--init-from", str(bundle),
        *["--epochs", "1", "--iterations-per-epoch", "2", "--lr", "1e-3"],
    )  # fmt: skip
    assert fine_tuned == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["autoencoder"]["init_from"]["path"] == str(bundle.resolve())
    assert saved["data"]["canvas"] == [32, 32]
    tuned = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)["model"]
    original = load_state_dict_file(bundle / "autoencoder.safetensors")
    assert tuned.keys() == original.keys() and not _equal(tuned, original)

    assert _unet_stage_from(bundle, common) == 0
    unet = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert _equal(unet["model"], load_state_dict_file(bundle / "diffusion.safetensors"))
    assert unet["scale_factor"] == load_bundle(bundle).metadata.latent_scale_factor

    again = training_parser().parse_args(["train-diffusion", *common, "--resume", "--init-from", str(bundle)])
    with pytest.raises(InputError, match="starts a new UNet stage"):
        again.handler(again)
    again = training_parser().parse_args(
        ["train-autoencoder", *common, "--resume", "--init-from", str(bundle)]
    )
    with pytest.raises(InputError, match="starts a new run"):
        again.handler(again)


def test_bundles_a_run_cannot_continue_are_refused(trained_bundle, tmp_path):
    root, bundle = trained_bundle
    other_vqvae = tiny_config(root)
    other_vqvae.autoencoder.args = {**other_vqvae.autoencoder.args, "num_embeddings": 17}
    with pytest.raises(InputError, match="not the architecture of bundle"):
        adopt_bundle_unet(other_vqvae, str(bundle))
    other_padding = tiny_config(root)
    other_padding.data.padding_value = 0.0
    with pytest.raises(InputError, match="padded with 0, bundle"):
        adopt_bundle_unet(other_padding, str(bundle))

    imported = tmp_path / "imported"
    shutil.copytree(bundle, imported)
    metadata = json.loads((imported / "bundle.json").read_text())
    metadata["latent_quantized"] = False
    (imported / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(InputError, match="unquantised latents"):
        adopt_bundle_unet(tiny_config(root), str(imported))

    config = tiny_config(root)
    adopt_bundle_autoencoder(config, str(bundle))
    config.autoencoder.init_from["sha256"] = "0" * 64
    with pytest.raises(InputError, match="changed since the run was configured"):
        initial_weights(config.autoencoder.init_from, "autoencoder")
    with pytest.raises(FOVCompletionError, match="not-a-bundle"):
        adopt_bundle_autoencoder(tiny_config(root), str(tmp_path / "not-a-bundle"))


def test_a_unet_started_on_another_autoencoders_latents_is_pointed_out(trained_bundle, capsys):
    """The UNet stage can start from a bundle whose autoencoder the run did not start from (same architecture):
    allowed, as a new encoder may be meant, but said, since the UNet's weights were made for other latents."""
    root, bundle = trained_bundle
    adopt_bundle_unet(tiny_config(root), str(bundle))
    assert "did not start from bundle" in capsys.readouterr().err
    config = tiny_config(root)
    adopt_bundle_autoencoder(config, str(bundle))
    adopt_bundle_unet(config, str(bundle))
    assert "did not start from" not in capsys.readouterr().err


def test_a_bundles_gain_flattening_is_taken_with_its_weights(trained_bundle, tmp_path):
    """Its networks saw flattened scans, so a run started from it prepares scans the same way, unless the
    command asks for another setting."""
    root, bundle = trained_bundle
    flattened = tmp_path / "flattened"
    shutil.copytree(bundle, flattened)
    metadata = json.loads((flattened / "bundle.json").read_text())
    metadata["intensity"]["flatten_sigma_mm"] = 25.0
    (flattened / "bundle.json").write_text(json.dumps(metadata))
    for adopt in (adopt_bundle_autoencoder, adopt_bundle_unet):
        config = tiny_config(root)
        adopt(config, str(flattened))
        assert config.data.flatten_sigma_mm == 25.0
        assert config.preprocessing_metadata().intensity.flatten_sigma_mm == 25.0
    run = tmp_path / "reflattened"  # a setting asked for on the command line is the run's, as for the UNet
    asked = run_training_command(
        "train-autoencoder", run, "--data", str(root), "--held-out", "sub-c02", "--init-from", str(flattened),
        *["--flatten-si", "40", "--epochs", "0", "--threads", "1"],
    )  # fmt: skip
    assert asked == 0
    assert json.loads((run / "config.json").read_text())["data"]["flatten_sigma_mm"] == 40.0
    metadata["intensity"]["upper_percentile"] = 99.0
    (flattened / "bundle.json").write_text(json.dumps(metadata))
    config = tiny_config(root)
    adopt_bundle_autoencoder(config, str(flattened))  # the scale its networks know
    assert config.intensity_spec().upper_percentile == 99.0
    with pytest.raises(InputError, match="normalises intensities differently from the run"):
        adopt_bundle_unet(tiny_config(root), str(flattened))
    metadata["intensity"]["out_max"] = 2.0
    (flattened / "bundle.json").write_text(json.dumps(metadata))
    for adopt in (adopt_bundle_autoencoder, adopt_bundle_unet):
        with pytest.raises(InputError, match="normalises intensities differently"):
            adopt(tiny_config(root), str(flattened))


def test_a_codebook_free_run_with_headroom_fine_tunes_a_quantised_bundle(trained_bundle, tmp_path):
    """The v1 recipe: both stages start from a bundle trained with the codebook and the cap, and learn continuous
    latents and the headroom above the cap; the bundle they make records both and can start the next run."""
    root, bundle = trained_bundle
    config = tiny_config(root)
    config.autoencoder.codebook = False
    config.data.intensity_clip = False
    config.autoencoder.epochs = config.diffusion.epochs = 1
    adopt_bundle_autoencoder(config, str(bundle))
    run = tmp_path / "continuous"
    train_autoencoder(config, run)
    adopt_bundle_unet(config, str(bundle))
    train_diffusion(config, run)
    tuned = load_bundle(export_bundle(run, tmp_path / "tuned"))
    metadata = tuned.metadata
    assert metadata.autoencoder["codebook"] is False and metadata.latent_quantized is False
    assert metadata.intensity.clip is False and metadata.intensity.upper_percentile == 95.0
    assert metadata.latent_scale_factor == load_bundle(bundle).metadata.latent_scale_factor
    pixels = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(tuned.autoencoder.encode_stage_2_inputs(pixels), tuned.autoencoder.encoder(pixels))
    assert json.loads((tuned.path / "bundle.json").read_text())["format_version"] == 2  # older readers refuse
    assert json.loads((bundle / "bundle.json").read_text())["format_version"] == 1

    # A run started from it keeps it codebook-free and unclipped, whatever its preset said: the codebook no
    # longer matches the encoder, and the decoder draws above the cap.
    follow_up = tiny_config(root)
    adopt_bundle_autoencoder(follow_up, str(tuned.path))
    assert follow_up.autoencoder.codebook is False and follow_up.data.intensity_clip is False
    adopt_bundle_unet(follow_up, str(tuned.path))  # ours, not an imported reference bundle
    assert follow_up.diffusion.init_from["bundle"] == metadata.name
    with pytest.raises(InputError, match="without a codebook and the run with one"):
        adopt_bundle_unet(tiny_config(root), str(tuned.path))
    unclipped_only = tiny_config(root)
    unclipped_only.autoencoder.codebook = False
    with pytest.raises(InputError, match="clip False; the run's"):
        adopt_bundle_unet(unclipped_only, str(tuned.path))

    malformed = tmp_path / "malformed"
    shutil.copytree(tuned.path, malformed)
    data = json.loads((malformed / "bundle.json").read_text())
    data["autoencoder"]["codebook"] = "no"
    (malformed / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(FOVCompletionError, match="'codebook' must be true or false"):
        load_bundle(malformed)


def test_a_wider_decoder_trains_alone_on_a_bundles_encoder(trained_bundle, tmp_path):
    """train-autoencoder --init-from B --decoder-channels --freeze-encoder: the encoder (so the latents and the
    bundle's UNet) stays the bundle's bit for bit, a wider decoder learns to draw them, and the bundle exported
    with the bundle's UNet records the decoder's widths where a reader can rebuild it."""
    root, bundle = trained_bundle
    original = load_bundle(bundle)
    widths = [2 * c for c in original.metadata.autoencoder["args"]["channels"]]
    run = tmp_path / "decoder"
    common = ["--run", str(run), "--threads", "1", "--device", "cpu", "--batch-size", "2"]
    args = training_parser().parse_args(
        [
            "train-autoencoder",
            *common,
            "--data",
            str(root),
            "--held-out",
            "sub-c02",
            "--init-from",
            str(bundle),
        ]
        + ["--decoder-channels", ",".join(map(str, widths)), "--freeze-encoder"]
        + ["--epochs", "1", "--iterations-per-epoch", "2", "--lr", "1e-3"]
    )
    assert args.handler(args) == 0
    tuned = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)["model"]
    before = original.autoencoder.state_dict()
    assert _equal(
        {k: v for k, v in tuned.items() if not k.startswith("decoder.")},
        {k: v for k, v in before.items() if not k.startswith("decoder.")},
    )
    decoder_keys = [k for k in tuned if k.startswith("decoder.")]
    assert any(tuned[k].shape != before[k].shape for k in decoder_keys)  # wider, so not the bundle's

    assert _unet_stage_from(bundle, common) == 0
    exported = load_bundle(export_bundle(run, tmp_path / "wide"))
    assert exported.metadata.autoencoder["decoder"]["channels"] == widths
    assert json.loads((exported.path / "bundle.json").read_text())["format_version"] == 3
    assert exported.metadata.weights["diffusion"].sha256 == original.metadata.weights["diffusion"].sha256
    assert exported.metadata.latent_scale_factor == original.metadata.latent_scale_factor
    pixels = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        latents = exported.autoencoder.encode_stage_2_inputs(pixels)
        assert torch.equal(latents, original.autoencoder.encode_stage_2_inputs(pixels))
        assert exported.autoencoder.decode_stage_2_outputs(latents).shape == pixels.shape
    assert exported.autoencoder.decoder.blocks[0].out_channels == widths[-1]
    # the memory check counts the wider decoder's feature maps
    assert estimate_peak_bytes(exported.metadata, 1, 64, 64) > estimate_peak_bytes(
        original.metadata, 1, 64, 64
    )

    follow_up = tiny_config(root)
    adopt_bundle_autoencoder(follow_up, str(exported.path))  # the next run keeps the decoder it loads into
    assert follow_up.autoencoder.decoder["channels"] == widths


def test_a_bundles_decoder_fine_tunes_adversarially_on_its_frozen_encoder(trained_bundle, tmp_path):
    """--freeze-encoder with the patch discriminator from the first step: the decoder starts from the bundle's
    own (same widths) and moves, the discriminator trains beside it, and the encoder stays bit-identical, so
    the bundle's UNet stays valid for the sharper decoder."""
    root, bundle = trained_bundle
    original = load_bundle(bundle).autoencoder.state_dict()
    run = tmp_path / "adversarial"
    args = training_parser().parse_args(
        ["train-autoencoder", "--run", str(run), "--threads", "1", "--device", "cpu", "--batch-size", "2"]
        + ["--data", str(root), "--held-out", "sub-c02", "--init-from", str(bundle), "--freeze-encoder"]
        + ["--adversarial-weight", "0.1", "--adversarial-warmup", "0"]
        + ["--epochs", "1", "--iterations-per-epoch", "2", "--lr", "1e-3"]
    )
    assert args.handler(args) == 0
    state = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)
    tuned = state["model"]
    assert _equal(
        {k: v for k, v in tuned.items() if not k.startswith("decoder.")},
        {k: v for k, v in original.items() if not k.startswith("decoder.")},
    )
    decoder_keys = [k for k in tuned if k.startswith("decoder.")]
    assert all(tuned[k].shape == original[k].shape for k in decoder_keys)  # the bundle's decoder, loaded
    assert any(not torch.equal(tuned[k], original[k]) for k in decoder_keys)  # and trained
    assert state["discriminator"]
    log = (run / "autoencoder" / "log.csv").read_text().splitlines()
    row = dict(zip(log[0].split(","), log[-1].split(",")))
    assert row["adversarial"] == "1" and float(row["generator"]) > 0 and float(row["discriminator"]) > 0


def test_decoders_that_would_change_the_latent_are_refused(trained_bundle, tmp_path):
    root, bundle = trained_bundle
    malformed = tmp_path / "malformed"
    shutil.copytree(bundle, malformed)
    data = json.loads((malformed / "bundle.json").read_text())
    data["autoencoder"]["decoder"] = {"embedding_dim": 8}
    (malformed / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(FOVCompletionError, match="decoder may set only .*; it sets embedding_dim"):
        load_bundle(malformed)

    run = tmp_path / "frozen-fresh"
    args = training_parser().parse_args(
        ["train-autoencoder", "--run", str(run), "--data", str(root), "--freeze-encoder", "--threads", "1"]
    )
    with pytest.raises(InputError, match="--freeze-encoder trains a decoder for a bundle's encoder"):
        args.handler(args)
    args = training_parser().parse_args(
        ["train-autoencoder", "--run", str(run), "--data", str(root), "--decoder-channels", "8,16,32"]
    )
    with pytest.raises(InputError, match="needs 2 widths"):
        args.handler(args)


def _residual_run(bundle, root, run, held_out_pixels_scale: float = 1.0, sliced: bool = False) -> dict:
    """Residual channels (2) on a codebook-free start from the bundle, 2 epochs straight or one per invocation."""
    config = tiny_config(root)
    config.autoencoder.codebook = False
    config.data.intensity_clip = False
    config.autoencoder.epochs = 2
    adopt_bundle_autoencoder(config, str(bundle))
    config.autoencoder.residual = {"latent_channels": 2}
    set_conditioning(config, config.diffusion.conditioning)
    if sliced:
        config.max_minutes = 1e-9  # each invocation stops after its first epoch, with a checkpoint
        train_autoencoder(config, run)
        train_autoencoder(config, run, resume=True)
    else:
        train_autoencoder(config, run)
    return load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)


def test_residual_channels_resume_exactly_and_take_their_scale_from_training_scans(trained_bundle, tmp_path):
    """The residual channels' spread is matched to the bundle's at every save, beside the weights: a run in
    slices continues the same weights as one straight through, the factors come from training windows (the
    held-out scan's pixels do not move them), and the run's autoencoder is read with them applied."""
    root, bundle = trained_bundle
    straight = _residual_run(bundle, root, tmp_path / "straight")
    sliced = _residual_run(bundle, root, tmp_path / "sliced", sliced=True)
    assert straight["step"] == sliced["step"] == 4
    assert _equal(straight["model"], sliced["model"])
    assert torch.equal(straight["residual_factors"], sliced["residual_factors"])
    assert straight["residual_factors"].shape == (2,)
    assert not torch.allclose(straight["residual_factors"], torch.ones(2))

    changed = tmp_path / "bids-changed"
    shutil.copytree(root, changed)
    for path in (changed / "sub-c02").rglob("*_T2w.nii.gz"):  # the held-out subject
        image = nib.load(path)
        nib.save(nib.Nifti1Image(image.get_fdata() * 0.5 + 7.0, image.affine), path)
    other = _residual_run(bundle, changed, tmp_path / "other-held-out")
    assert torch.equal(other["residual_factors"], straight["residual_factors"])

    config = tiny_config(root)
    config.autoencoder.codebook = False
    config.data.intensity_clip = False
    adopt_bundle_autoencoder(config, str(bundle))
    config.autoencoder.residual = {"latent_channels": 2}
    read = load_trained_autoencoder(tmp_path / "straight", config, torch.device("cpu"))
    expected = build_from_spec(config.autoencoder.spec())
    expected.load_state_dict(straight["model"])
    apply_residual_factors(expected, straight["residual_factors"])
    assert _equal(read.state_dict(), expected.state_dict())
