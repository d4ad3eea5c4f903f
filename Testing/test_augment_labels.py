"""Non-leaky augmentation: the UNet is told each latent copy's augmentation, starts as the plain UNet it was
given, and folds back into a plain UNet at export that draws what the labelled one draws for no augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_helpers import LIA_AFFINE, run_training_command, spine_like, tiny_config, write_bids

from fovcompletion.bundle import load_bundle, load_state_dict_file
from fovcompletion.bundle_factory import tiny_unet_args
from fovcompletion.errors import InputError
from fovcompletion.networks import build_network
from fovcompletion.training import latents
from fovcompletion.training.augment import augment_intensity, cut_window, window_transform
from fovcompletion.training.augment_labels import (
    AUGMENT_LABEL_NAMES,
    LABEL_MAP_RATE,
    AugmentLabelledUNet,
    labelled_weights,
    plain_weights,
)
from fovcompletion.training.autoencoder import train_autoencoder
from fovcompletion.training.checkpoints import LAST, load_checkpoint
from fovcompletion.training.config import AugmentConfig, load_config
from fovcompletion.training.data import find_scans, load_slab
from fovcompletion.training.diffusion import train_diffusion
from fovcompletion.training.export import export_bundle

LABELS = len(AUGMENT_LABEL_NAMES)


def _random_plain_unet(seed: int = 0) -> torch.nn.Module:
    """A tiny UNet with every weight drawn (MONAI zeroes its output layers, which would hide any difference)."""
    torch.manual_seed(seed)
    unet = build_network("DiffusionModelUNet", tiny_unet_args())
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.normal_(0.0, 0.2)
    return unet.eval()


def _inputs(unet: torch.nn.Module, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((batch, unet.in_channels, 16, 16), generator=generator)
    return x, torch.tensor([5, 500, 990][:batch])


def test_a_labelled_unet_starts_as_the_plain_one_and_exports_as_it_draws_unaugmented():
    plain = _random_plain_unet()
    labelled = AugmentLabelledUNet(tiny_unet_args()).eval()
    labelled.load_state_dict(labelled_weights(plain.state_dict(), labelled))
    x, t = _inputs(plain)
    some_labels = torch.linspace(-1, 1, 3 * LABELS).reshape(3, LABELS)
    with torch.no_grad():
        expected = plain(x, t)
        # the label map starts at zero: whatever the labels, the plain UNet's output
        assert torch.equal(labelled(x, t), expected)
        assert torch.equal(labelled(x, t, some_labels), expected)
        # once trained, the labels matter; at label zero the map adds nothing, and the exported plain UNet is it
        labelled.unet.class_embedding.weight.normal_()
        assert not torch.allclose(labelled(x, t, some_labels), expected, atol=1e-3)
        exported = build_network("DiffusionModelUNet", tiny_unet_args()).eval()
        exported.load_state_dict(plain_weights(labelled.state_dict()))
        assert torch.equal(exported(x, t), labelled(x, t)) and torch.equal(exported(x, t), expected)
    # a map with a bias (which this version never makes) would add it at label zero: refused, not dropped
    with pytest.raises(InputError, match="label map"):
        plain_weights({**labelled.state_dict(), "unet.class_embedding.bias": torch.ones(1)})
    # a plain UNet's weights are exported as they are
    assert all(
        torch.equal(value, plain.state_dict()[key])
        for key, value in plain_weights(plain.state_dict()).items()
    )
    assert plain_weights(plain.state_dict()).keys() == plain.state_dict().keys()


def test_the_augmentation_records_what_it_drew_and_a_clean_copy_records_none():
    aug = AugmentConfig(rotate_deg=0.0, scale=(1.0, 1.0), stretch=(2.0, 2.0))
    record: dict[str, float] = {}
    matrix, offset = window_transform(np.random.default_rng(0), aug, (15.5, 15.5), (32, 32), record)
    # twice as tall: one output row steps half a source row, the columns as they were
    assert np.allclose(matrix, [[0.5, 0.0], [0.0, 1.0]])
    assert record["log_stretch"] == pytest.approx(np.log(2.0)) and record["rotation_rad"] == 0.0
    bar = np.zeros((32, 32), np.float32)
    bar[14:18] = 1.0  # four rows tall
    window, _ = cut_window(bar, np.ones_like(bar, bool), matrix, offset, (32, 32), 0.0)
    assert np.sum(window[:, 16] > 0.5) == 8
    # with a rotation too, the scan is stretched along its own axis and then turned, never sheared
    tilted = AugmentConfig(rotate_deg=20.0, scale=(0.8, 1.25), stretch=(0.75, 1.33))
    rng = np.random.default_rng(5)
    for _ in range(20):
        drawn: dict[str, float] = {}
        matrix, _ = window_transform(rng, tilted, (10.0, 10.0), (32, 32), drawn)
        zoom, stretch = np.exp(drawn["log_zoom"]), np.exp(drawn["log_stretch"])
        assert abs(drawn["rotation_rad"]) > 0
        assert np.allclose(matrix @ matrix.T, np.diag([1 / stretch**2, 1.0]) / zoom**2)
    clean: dict[str, float] = {}
    window_transform(None, aug, (10.0, 10.0), (32, 32), clean)
    assert clean == {"rotation_rad": 0.0, "log_zoom": 0.0, "log_stretch": 0.0}

    # without a stretch the draws are the ones runs made before it existed: angle, zoom, nothing more
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    window_transform(rng, AugmentConfig(), (10.0, 10.0), (32, 32))
    twin.uniform(size=2)
    assert rng.uniform() == twin.uniform()

    window = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    drawn: dict[str, float] = {}
    augment_intensity(np.random.default_rng(2), AugmentConfig(), window, np.ones((8, 8), bool), record=drawn)
    assert drawn.keys() == {"log_gamma", "log_intensity_scale", "intensity_shift"}
    assert drawn["log_gamma"] != 0.0 and drawn["intensity_shift"] != 0.0


def test_latent_copies_carry_their_labels_through_the_cache(tmp_path):
    config = tiny_config(write_bids(tmp_path / "bids"))
    assert latents.padded_shape(100, 40, config, 4) == (100 + 2 * 32, 56)  # no stretch: as before it existed
    config.augment.stretch, config.augment.scale = (0.75, 1.3), (0.8, 1.2)
    # room for the longest draw, 1.3 x 1.2 x 100 rows
    assert latents.padded_shape(100, 40, config, 4)[0] == 156 + 2 * 32
    config.augment.stretch = (0.8, 1.25)
    slabs = [load_slab(record, config) for record in find_scans(config.data.roots, [])[:1]]
    autoencoder = build_network("VQVAE", config.autoencoder.args)
    maps = latents.encode_maps(autoencoder, slabs, config, 2, torch.device("cpu"), seed=0)
    labels = torch.stack([m.augment_label for m in maps]).reshape(
        5, 3, LABELS
    )  # 5 slices x (clean + 2 copies)
    assert torch.equal(labels[:, 0], torch.zeros(5, LABELS))
    assert (labels[:, 1:].abs().sum(dim=-1) > 0).all()
    stretch = AUGMENT_LABEL_NAMES.index("log_stretch")
    assert 0 < labels[:, 1:, stretch].abs().max() <= np.log(1.25) + 1e-6

    again = latents.unpack(latents.pack(maps))
    assert all(torch.equal(a.augment_label, b.augment_label) for a, b in zip(maps, again))
    older = latents.pack(maps)
    del older["augment_labels"]  # a cache written before the labels: no augmentation known, zeros
    assert all(not m.augment_label.any() for m in latents.unpack(older))
    # labels stacked in one tensor, as other code may write them
    stacked = {**latents.pack(maps), "augment_labels": labels.reshape(-1, LABELS)}
    from_stacked = latents.unpack(stacked)
    assert len(from_stacked) == len(maps)
    assert all(torch.equal(a.augment_label, b.augment_label) for a, b in zip(maps, from_stacked))
    dataset = latents.LatentWindowDataset(maps, config, 4, 4, seed=0)
    latent, inside, label = dataset[0]
    assert latent.shape[-2:] == inside.shape == dataset.shape and label.shape == (LABELS,)


def test_a_unet_trained_with_labels_exports_a_plain_bundle_that_completes(tmp_path):
    from fovcompletion.pipeline import complete

    root = write_bids(tmp_path / "bids")
    run = tmp_path / "labelled"
    config = tiny_config(root)
    config.augment.stretch = (0.8, 1.25)
    config.diffusion.augment_labels = True
    config.diffusion.iterations_per_epoch = 4
    train_autoencoder(config, run)
    train_diffusion(config, run)
    state = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert state["model"]["unet.class_embedding.weight"].abs().sum() > 0  # the labels were learned from
    rest, label_map = state["optimizer"]["param_groups"]
    assert label_map["lr"] == pytest.approx(LABEL_MAP_RATE * rest["lr"]) and len(label_map["params"]) == 1

    folder = export_bundle(run, tmp_path / "bundle")
    exported = load_state_dict_file(folder / "diffusion.safetensors")
    assert not any("class_embedding" in key for key in exported)
    labelled = AugmentLabelledUNet(config.diffusion.args).eval()
    labelled.load_state_dict(state["ema"])
    bundle = load_bundle(folder)
    x, t = _inputs(bundle.unet, 2)
    with torch.no_grad():
        assert torch.equal(bundle.unet(x, t), labelled(x, t))
    result = complete(spine_like((7, 40, 48), 9), LIA_AFFINE, model=folder, steps=2, extend_inferior_mm=20)
    assert result.image.shape == (5, 60, 48) and np.isfinite(result.image).all()

    # a resume with another augmentation does not train on latents drawn with the old one
    cache = run / "diffusion" / "latents.pt"
    before = load_checkpoint(cache, restore_rng=False)
    config.augment.stretch = (0.9, 1.1)
    config.diffusion.epochs = 3
    train_diffusion(config, run, resume=True)
    after = load_checkpoint(cache, restore_rng=False)
    assert before["key"]["augmentation"]["stretch"] == [0.8, 1.25]
    assert after["key"]["augmentation"]["stretch"] == [0.9, 1.1]
    stretch = AUGMENT_LABEL_NAMES.index("log_stretch")
    drawn = torch.stack(after["train"]["augment_labels"])[:, stretch]
    assert 0 < drawn.abs().max() <= -np.log(0.9) + 1e-6  # log 0.9 <= each <= log 1.1: drawn anew
    assert not torch.equal(drawn, torch.stack(before["train"]["augment_labels"])[:, stretch])
    rest, label_map = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["optimizer"][
        "param_groups"
    ]
    assert label_map["lr"] == pytest.approx(
        LABEL_MAP_RATE * rest["lr"]
    )  # the map's own rate after a resume too

    # ranges no draw can come from are refused before the stage changes anything
    config.augment.gamma = (0.0, 2.0)
    config.diffusion.epochs = 4
    checkpoint = (run / "diffusion" / LAST).read_bytes()
    with pytest.raises(InputError, match="augment.gamma"):
        train_diffusion(config, run, resume=True)
    assert (run / "diffusion" / LAST).read_bytes() == checkpoint


def test_the_command_starts_labels_on_a_bundles_unet_and_keeps_a_runs_choice(tmp_path):
    root = write_bids(tmp_path / "bids")
    first = tmp_path / "first"
    config = tiny_config(root)
    config.autoencoder.epochs = config.diffusion.epochs = 1
    train_autoencoder(config, first)
    train_diffusion(config, first)
    bundle = export_bundle(first, tmp_path / "bundle")

    run = tmp_path / "tuned"
    start = ["--data", str(root), "--held-out", "sub-c02", "--init-from", str(bundle), "--epochs", "0"]
    assert run_training_command("train-autoencoder", run, *start) == 0
    tune = [
        "--init-from",
        str(bundle),
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "2",
        "--latent-augmentations",
        "1",
    ]
    labels = ["--augment-labels", "--stretch", "0.8,1.25", "--rotate-deg", "15"]
    assert run_training_command("train-diffusion", run, *tune, *labels) == 0
    stage = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert stage["config"]["diffusion"]["augment_labels"] is True
    assert tuple(stage["config"]["augment"]["stretch"]) == (0.8, 1.25)
    assert stage["config"]["augment"]["rotate_deg"] == 15
    # the bundle's plain weights, under the labelled UNet's prefix
    plain = load_state_dict_file(bundle / "diffusion.safetensors")
    assert {f"unet.{key}" for key in plain} < set(stage["model"])

    before = (run / "diffusion" / LAST).read_bytes()
    with pytest.raises(InputError, match="trained with augmentation labels"):
        run_training_command("train-diffusion", run, "--resume", "--no-augment-labels", "--epochs", "2")
    assert (run / "diffusion" / LAST).read_bytes() == before

    # the Python API resumes it from the stage's own settings (the run's config.json has no labels)
    assert load_config(run / "config.json").diffusion.augment_labels is False
    settings = load_config(run / "diffusion" / "config.json")
    settings.diffusion.epochs = 2
    settings.save(run / "diffusion" / "config.json")
    train_diffusion(None, run, resume=True)
    resumed = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert resumed["step"] == 2 * stage["step"] and resumed["config"]["diffusion"]["augment_labels"] is True
    with pytest.raises(SystemExit):
        run_training_command("train-diffusion", run, "--stretch", "1.2,0.8")
