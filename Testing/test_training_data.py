"""Training data: scan discovery, held-out split, window shapes, and augmentation that never flips S-I."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from training_helpers import LIA_AFFINE, tiny_config, write_bids

from fovcompletion.bundle import read_metadata
from fovcompletion.errors import InputError
from fovcompletion.heap import release_freed_heap
from fovcompletion.networks import build_network, count_parameters
from fovcompletion.registry import resolve_bundle
from fovcompletion.training import latents
from fovcompletion.training.augment import augment_intensity, flip_left_right, window_transform
from fovcompletion.training.config import AugmentConfig, config_from_dict, preset_config
from fovcompletion.training.data import WindowDataset, WindowSampler, find_scans, load_slab, split_scans


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    return write_bids(tmp_path_factory.mktemp("bids"))


def test_find_and_split(bids):
    records = find_scans([str(bids)], [])
    assert [r.subject for r in records] == ["sub-c01", "sub-c02", "sub-l01", "sub-l02"]
    assert records[0].region == "cervical" and records[0].licence == "CC0"
    train, val = split_scans(records, ["sub-l02"])
    assert [r.subject for r in val] == ["sub-l02"] and len(train) == 3
    with pytest.raises(InputError, match="sub-x"):
        split_scans(records, ["sub-x"])
    with pytest.raises(InputError, match="no BIDS"):
        find_scans([str(bids / "sub-c01")], [])


def test_a_root_under_a_folder_named_like_a_subject_keeps_its_subjects(bids, tmp_path):
    """The subject is the nearest `sub-*` of a scan's path: a study kept under `sub-study/` is still four
    subjects with their regions and licences, and one of them can be held out."""
    import shutil

    nested = tmp_path / "sub-study" / "bids"
    shutil.copytree(bids, nested)
    records = find_scans([str(nested)], [])
    assert [r.subject for r in records] == ["sub-c01", "sub-c02", "sub-l01", "sub-l02"]
    assert records[0].region == "cervical" and records[0].licence == "CC0"
    assert [r.subject for r in split_scans(records, ["sub-c02"])[1]] == ["sub-c02"]


def test_slab_uses_inference_preprocessing(bids):
    config = tiny_config(bids)
    slab = load_slab(find_scans([str(bids)], [])[0], config)
    assert slab.image.shape == (5, 36, 24)  # 5 central slices, 72 x 48 mm at 2 mm
    assert slab.image.min() >= -1 and slab.image.max() <= 1


def test_windows_have_canvas_shape_and_masks(bids):
    config = tiny_config(bids)
    slabs = [load_slab(r, config) for r in find_scans([str(bids)], [])]
    dataset = WindowDataset(WindowSampler(slabs, config), length=20, seed=3)
    outside_seen = False
    for index in range(len(dataset)):
        window, inside = dataset[index]
        assert window.shape == (1, 32, 32) and inside.shape == (1, 32, 32)
        assert window.min() >= -1 and window.max() <= 1
        assert np.all(window.numpy()[~inside.numpy()] == -1)  # padding outside the scan
        assert inside.float().mean() > 0.2
        outside_seen |= bool((~inside).any())
    assert outside_seen  # some windows run past the scan (24 columns < 32, and the scan's ends)
    first = dataset[5][0]
    assert np.array_equal(first, dataset[5][0])  # deterministic per (epoch, index)
    dataset.set_epoch(1)
    assert not np.array_equal(first, dataset[5][0])


def test_crops_on_the_grid_copy_pixels_instead_of_interpolating_them(bids):
    """The autoencoder's crops keep the scan's noise texture: with intensity augmentation made neutral, every
    pixel of an on-grid crop is one of the slab's values; rotated, zoomed, sub-pixel crops are mostly new."""
    config = tiny_config(bids)
    config.augment = AugmentConfig(gamma=(1, 1), intensity_scale=(1, 1), intensity_shift=0.0, bias_field=0.0)
    slabs = [load_slab(r, config) for r in find_scans([str(bids)], [])]
    source = np.unique(np.concatenate([s.image.ravel() for s in slabs]))

    def copied_fraction(sampler: WindowSampler) -> float:
        rng = np.random.default_rng(0)
        values = np.concatenate([window[inside] for window, inside in (sampler.draw(rng) for _ in range(10))])
        nearest = np.clip(np.searchsorted(source, values), 1, len(source) - 1)
        distance = np.minimum(abs(source[nearest] - values), abs(source[nearest - 1] - values))
        return float(np.mean(distance < 1e-5))

    assert copied_fraction(WindowSampler(slabs, config, shape=(16, 16), on_grid=True)) == 1.0
    assert copied_fraction(WindowSampler(slabs, config, shape=(16, 16))) < 0.5


def test_geometric_augmentation_never_flips():
    rng = np.random.default_rng(0)
    aug = AugmentConfig(rotate_deg=30.0, scale=(0.5, 2.0))
    for _ in range(200):
        matrix, _ = window_transform(rng, aug, (10.0, 10.0), (32, 32))
        assert np.linalg.det(matrix) > 0  # rotation and zoom only: no mirror of any in-plane axis
        assert matrix[0, 0] > 0  # rows still run superior -> inferior (|angle| < 90 degrees)


def test_augmented_windows_keep_superior_at_the_top(bids):
    """A ramp brightening towards the feet stays brighter at the bottom of every augmented window."""
    config = tiny_config(bids)
    slabs = [load_slab(r, config) for r in find_scans([str(bids)], [])]
    ramp = np.broadcast_to(np.linspace(-1, 1, 36)[None, :, None], (5, 36, 24)).astype(np.float32)
    for slab in slabs:
        slab.image = ramp.copy()
    config.augment.gamma = (1.0, 1.0)
    config.augment.bias_field = 0.0
    sampler = WindowSampler(slabs, config)
    rng = np.random.default_rng(1)
    for _ in range(50):
        window, inside = sampler.draw(rng)
        rows = [window[r][inside[r]].mean() for r in range(32) if inside[r].sum() > 4]
        assert rows[-1] > rows[0]


def test_left_right_flip_reverses_slices_only():
    stack = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    flipped = flip_left_right(np.random.default_rng(0), AugmentConfig(flip_lr=1.0), stack)
    assert np.array_equal(flipped, stack[::-1])
    assert np.array_equal(flip_left_right(np.random.default_rng(0), AugmentConfig(flip_lr=0.0), stack), stack)


def test_intensity_augmentation_keeps_padding_and_range():
    rng = np.random.default_rng(2)
    window = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    inside = np.zeros((8, 8), bool)
    inside[:, :4] = True
    out = augment_intensity(rng, AugmentConfig(), window, inside)
    assert np.array_equal(out[:, 4:], window[:, 4:])
    assert out.min() >= -1 and out.max() <= 1


def test_config_round_trip_and_presets():
    reference = preset_config("reference")
    assert reference.autoencoder.args["channels"] == [128, 256, 512]
    assert reference.data.canvas == (1280, 512)
    default = preset_config("default")
    again = config_from_dict(default.to_dict())
    assert again == default
    with pytest.raises(InputError):
        config_from_dict({"bogus": 1})
    with pytest.raises(InputError):
        preset_config("huge")


def test_gpu_preset_can_start_from_the_shipped_vqvae_and_ships_within_the_limits():
    """The GPU recipe keeps the bundled model's VQ-VAE (docs/training.md starts it with train-autoencoder
    --init-from), and its wider UNet still fits the shipped model's 50 MB bundle limit."""
    gpu = preset_config("gpu")
    assert config_from_dict(gpu.to_dict()) == gpu
    folder = resolve_bundle(None)
    shipped = read_metadata(folder)
    assert gpu.autoencoder.args == shipped.autoencoder["args"]
    assert gpu.diffusion.conditioning == shipped.conditioning
    unet = count_parameters(build_network("DiffusionModelUNet", gpu.diffusion.args))
    assert unet > 2 * shipped.training["parameters"]["diffusion"]
    weights = 4 * unet + (folder / shipped.weights["autoencoder"].file).stat().st_size
    assert weights < 50_000_000


def test_latent_encoding_returns_freed_heap_after_every_slice(bids, monkeypatch):
    """Each encoded slice (all its copies) hands the freed feature maps back, so that a large cache does not
    grow the process by the size of every feature map it ever computed; glibc (CI's C library) supports it."""
    assert release_freed_heap() is (platform.libc_ver()[0] == "glibc")
    config = tiny_config(bids)
    slabs = [load_slab(record, config) for record in find_scans([str(bids)], [])[:2]]
    calls = []
    monkeypatch.setattr(latents, "release_freed_heap", lambda: calls.append(1) or True)
    autoencoder = build_network("VQVAE", config.autoencoder.args)
    maps = latents.encode_maps(autoencoder, slabs, config, 2, torch.device("cpu"), seed=0)
    assert len(maps) == 2 * 5 * 3 and len(calls) == 2 * 5


def test_kl2_preset_runs_in_the_engine_within_the_shipped_limits(tmp_path):
    """The kl2 recipe's networks, canvas and headroom normalisation make a bundle the engine completes with
    (random weights here: geometry, the /2 latent grid, windows and the exact known voxels are what count)."""
    from fovcompletion.bundle_factory import create_random_bundle
    from fovcompletion.pipeline import complete

    kl2 = preset_config("kl2")
    assert config_from_dict(kl2.to_dict()) == kl2
    metadata = kl2.preprocessing_metadata()
    assert metadata.latent_factor == 2 and metadata.size_multiple == 8
    folder = create_random_bundle(
        tmp_path / "kl2",
        autoencoder_args=kl2.autoencoder.args,
        autoencoder_class=kl2.autoencoder.network,
        unet_args=kl2.diffusion.args,
        canvas=metadata.canvas,
        intensity=metadata.intensity,
        conditioning=kl2.diffusion.conditioning,
    )
    weights = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    assert weights < 50_000_000
    scan = (200 + 50 * np.random.default_rng(0).random((7, 80, 60))).astype(np.float32)
    # 160 mm below an 80 mm scan: three 128 mm windows, each keeping 64 mm of context
    result = complete(scan, LIA_AFFINE, model=folder, steps=2, extend_inferior_mm=160, slices=3, device="cpu")
    assert result.image.shape == (3, 240, 60) and result.mask.sum() == 3 * 80 * 60
    assert np.array_equal(result.image[:, :80], scan[2:5])  # the known voxels are the input's, exactly
    assert np.isfinite(result.image).all() and result.image[:, 80:].std() > 0
