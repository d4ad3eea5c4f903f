"""Autoguidance: a bundle's guide UNet (a smaller, shorter-trained model on the same latents) is stored, checked
and loaded like the other networks, the sampler moves each step away from it by the asked weight, and a weight
that a model cannot use is refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GUIDE_ARGS, guide_unet, synthetic_scan, with_output_weights
from fovcompletion.bundle import SchedulerSpec, load_bundle, read_metadata, save_bundle
from fovcompletion.bundle_factory import create_random_bundle
from fovcompletion.cli import main
from fovcompletion.conditioning import conditioned_input
from fovcompletion.errors import BundleError, InputError
from fovcompletion.latent_filter import gaussian_low_pass
from fovcompletion.networks import build_network
from fovcompletion.pipeline import complete
from fovcompletion.sampling import GUIDE_ALONE_SIGMA, LatentInpainter, SamplerOptions, alphas_cumprod

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def guided_bundle(tmp_path_factory):
    """A conditioned tiny bundle, and the same bundle with a guide (weight 2, latent scale 1.5 x the UNet's)."""
    root = tmp_path_factory.mktemp("guided")
    plain = with_output_weights(
        load_bundle(create_random_bundle(root / "zero", conditioning="masked_latent", seed=4))
    )
    plain_folder = save_bundle(root / "plain", plain.metadata, plain.autoencoder, plain.unet)
    guide = guide_unet()
    spec = {"class": "DiffusionModelUNet", "args": GUIDE_ARGS, "latent_scale_factor": 1.5, "weight": 2.0}
    metadata = replace(plain.metadata, guide=spec)
    guided_folder = save_bundle(root / "guided", metadata, plain.autoencoder, plain.unet, guide=guide)
    return plain_folder, guided_folder


def test_a_guide_is_saved_with_its_sha256_and_loaded_and_older_bundles_stay_format_4_or_less(guided_bundle):
    plain, guided = guided_bundle
    stored = json.loads((guided / "bundle.json").read_text())
    assert stored["format_version"] == 5 and stored["guide"]["weight"] == 2.0
    assert len(stored["weights"]["guide"]["sha256"]) == 64
    assert "guide" not in json.loads((plain / "bundle.json").read_text())
    assert json.loads((plain / "bundle.json").read_text())["format_version"] < 5
    bundle = load_bundle(guided)
    assert bundle.guide is not None and not bundle.guide.training
    assert load_bundle(plain).guide is None
    weights = bundle.guide.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in guide_unet().state_dict().items())


def test_a_changed_guide_weight_file_is_refused_on_load(guided_bundle, tmp_path):
    import shutil

    folder = tmp_path / "changed"
    shutil.copytree(guided_bundle[1], folder)
    data = bytearray((folder / "guide.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "guide.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="guide"):
        load_bundle(folder)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["guide"]["args"].update(in_channels=4), "guide UNet has 4 in channels, its UNet 9"),
        (lambda m: m["guide"].update(weight=-1), "weight >= 0"),
        (lambda m: m["guide"].update(latent_scale_factor=0), "latent_scale_factor > 0"),
        (lambda m: m["guide"].update(alone_from=-1), "alone_from must be a timestep >= 0"),
        (lambda m: m["guide"].update(alone_from=500.5), "alone_from must be a timestep >= 0"),
        (lambda m: m["weights"].pop("guide"), "both its entry and its weight file"),
        (lambda m: m["scheduler"].update(prediction_type="v_prediction"), "this one predicts v_prediction"),
    ],
)
def test_a_guide_that_cannot_work_is_refused_when_the_metadata_is_read(guided_bundle, tmp_path, edit, match):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(guided_bundle[1], folder)
    metadata = json.loads((folder / "bundle.json").read_text())
    edit(metadata)
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=match):
        read_metadata(folder)


def first_step(
    bundle, t: int = 500, guidance: float = 1.0, autoguidance: float = 0.0, alone_from: int = 1000
):
    """The noise prediction of one step at timestep t on a fixed sample (returned too) whose upper half is known."""
    mask = torch.zeros(1, 1, 8, 8)
    mask[:, :, :4] = 1
    known = torch.full((1, 4, 8, 8), 0.5)
    inpainter = LatentInpainter(
        bundle.unet,
        SchedulerSpec(),
        torch.Generator().manual_seed(0),
        conditioning="masked_latent",
        guide=bundle.guide,
        guide_scale=1.5,
    )
    inpainter.guidance, inpainter.autoguidance, inpainter.guide_alone_from = (
        guidance,
        autoguidance,
        alone_from,
    )
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    return inpainter._eps_and_x0(z, t, known, mask)[0], z, known, mask


def test_one_step_moves_away_from_the_guide_by_the_weight(guided_bundle):
    """eps = eps_cfg + w (eps_with - eps_guide). The guide learned latents 1.5 times larger: it reads the sample
    at the timestep of the same signal-to-noise ratio, rescaled so that its noise stays unit (the known latent, which
    has none, 1.5 times)."""
    bundle = load_bundle(guided_bundle[1])
    plain, z, known, mask = first_step(bundle)
    guided = first_step(bundle, autoguidance=3.0)[0]
    alphas = alphas_cumprod(SchedulerSpec())
    a = float(alphas[500])
    a_guide = a / (a + 1.5**2 * (1 - a))  # the same signal-to-noise ratio for a signal 1.5 times larger
    t_guide = int(torch.argmin((alphas - a_guide).abs()))
    assert t_guide > 500  # in the guide's larger units the sample holds less signal: a noisier, later step
    scaled = 1.5 * (a_guide / a) ** 0.5 * z  # signal sqrt(a_guide) x 1.5 x the clean latent, unit noise
    with torch.no_grad():
        guide_input = conditioned_input(scaled, 1.5 * known, mask)
        from_guide = bundle.guide(guide_input, torch.full((1,), t_guide, dtype=torch.long))
    torch.testing.assert_close(guided, plain + 3.0 * (plain - from_guide), rtol=1e-4, atol=1e-5)


def test_from_guide_alone_from_the_steps_take_all_their_guidance_from_the_guide(guided_bundle):
    """At t >= T the classifier-free share moves onto the guide, at the layout's scale: guidance 2 and autoguidance
    1 step as eps_with + 2 x the low-passed (eps_with - eps_guide), with no run without the context; below T, and
    with autoguidance off, nothing changes."""
    bundle = load_bundle(guided_bundle[1])

    def eps(t: int, guidance: float, autoguidance: float, alone_from: int = 1000) -> torch.Tensor:
        return first_step(bundle, t, guidance, autoguidance, alone_from)[0]

    for t in (600, 500):  # from T on, T included
        with_context = eps(t, 1.0, 0.0)
        push = eps(t, 1.0, 1.0) - with_context
        alone = eps(t, 2.0, 1.0, alone_from=500)
        expected = with_context + 2.0 * gaussian_low_pass(push, GUIDE_ALONE_SIGMA)
        torch.testing.assert_close(alone, expected, rtol=1e-5, atol=1e-5)
        assert (alone - eps(t, 1.0, 2.0)).abs().max() > 1e-3  # the pixel-scale push is gone
        assert (alone - eps(t, 2.0, 1.0)).abs().max() > 1e-3
    torch.testing.assert_close(eps(400, 2.0, 1.0, alone_from=500), eps(400, 2.0, 1.0), rtol=0, atol=0)
    # no classifier-free share to move: guidance 1 or below keeps its own weights
    torch.testing.assert_close(eps(600, 0.5, 1.0, alone_from=500), eps(600, 0.5, 1.0), rtol=0, atol=0)
    torch.testing.assert_close(eps(600, 2.0, 0.0, alone_from=500), eps(600, 2.0, 0.0), rtol=0, atol=0)


def copy_with_alone_from(source: Path, folder: Path, alone_from: int) -> Path:
    """A copy of the guided bundle whose guide's `alone_from` is set (the weights, and so their hashes, unchanged)."""
    import shutil

    shutil.copytree(source, folder)
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["guide"]["alone_from"] = alone_from
    (folder / "bundle.json").write_text(json.dumps(metadata))
    return folder


def test_the_bundles_guide_alone_from_is_the_default_and_a_model_without_a_guide_refuses_it(
    guided_bundle, tmp_path, capsys
):
    import nibabel as nib

    plain, guided = guided_bundle
    alone = copy_with_alone_from(guided, tmp_path / "alone", 0)
    assert read_metadata(alone).guide_alone_from == 0 and read_metadata(guided).guide_alone_from == 1000
    scan = synthetic_scan((6, 40, 30))

    def run(model, **options):
        sampler = SamplerOptions(steps=2, guidance=2.0, **options)
        return complete(scan, AFFINE, model=model, slices=2, extend_inferior_mm=30, sampler=sampler).image

    default = run(alone)
    np.testing.assert_array_equal(default, run(guided, guide_alone_from=0))
    np.testing.assert_array_equal(run(alone, guide_alone_from=1000), run(guided))
    assert np.abs(default - run(guided)).max() > 1e-2
    np.testing.assert_array_equal(run(plain, guide_alone_from=1000), run(plain))
    with pytest.raises(
        InputError, match="guide alone from 500 cannot be used: random-test-bundle has no guide"
    ):
        run(plain, guide_alone_from=500)
    with pytest.raises(InputError, match="guide alone from must be a timestep >= 0"):
        run(guided, guide_alone_from=-1)
    with pytest.raises(InputError, match="guide alone from 0 cannot be used: the reference sampler"):
        sampler = SamplerOptions("reference", 2, guide_alone_from=0)
        complete(scan, AFFINE, model=guided, extend_inferior_mm=30, sampler=sampler)
    # the reference sampler never applies a bundle's guide, alone_from included
    reference = SamplerOptions("reference", 2)
    np.testing.assert_array_equal(
        complete(scan, AFFINE, model=alone, slices=2, extend_inferior_mm=30, sampler=reference).image,
        complete(scan, AFFINE, model=guided, slices=2, extend_inferior_mm=30, sampler=reference).image,
    )
    source, out = tmp_path / "scan.nii.gz", tmp_path / "out.nii.gz"
    nib.save(nib.Nifti1Image(scan, AFFINE), str(source))
    common = ["--extend-inferior", "30", "--steps", "2", "--slices", "2", "--progress", "none"]
    command = ["complete", str(source), "-o", str(out), "--guide-alone-from", "0", *common]
    assert main([*command, "--model", str(guided)]) == 0 and out.is_file()
    out.unlink()
    assert main([*command, "--model", str(plain)]) != 0 and not out.exists()
    assert "has no guide UNet" in capsys.readouterr().err


def test_the_model_listing_names_the_guide_alone_timestep(guided_bundle, tmp_path, monkeypatch, capsys):
    import shutil

    from fovcompletion.registry import ENV_MODEL_PATH

    models = tmp_path / "models"
    copy_with_alone_from(guided_bundle[1], models / "alone", 500)
    shutil.copytree(guided_bundle[1], models / "never")
    monkeypatch.setenv(ENV_MODEL_PATH, str(models))
    monkeypatch.setenv("FOVCOMPLETION_HOME", str(tmp_path / "home"))
    assert main(["models", "--json"]) == 0
    listed = {Path(row["path"]).name: row["sampler"] for row in json.loads(capsys.readouterr().out)}
    assert listed["alone"]["guide_alone_from"] == 500 and listed["never"]["guide_alone_from"] is None
    assert main(["models"]) == 0
    assert capsys.readouterr().out.count("(the guide alone from t = 500)") == 1


def test_the_guide_alone_share_counts_the_unet_steps_resampling_repeats_included():
    from fovcompletion.schedule import guide_alone_share, step_guidance

    options = SamplerOptions(steps=10, guidance=2.0, autoguidance=1.0, guide_alone_from=500)
    # 10 steps from 999 to 0: 999, 888, ..., 555 (5 of them) at t >= 500
    assert guide_alone_share(options, 1000) == pytest.approx(0.5)
    # RePaint repeats the first 5 steps once more: 10 of 15 UNet steps at t >= 500
    assert guide_alone_share(replace(options, resample=2, jump_length=5), 1000) == pytest.approx(10 / 15)
    assert guide_alone_share(replace(options, autoguidance=0.0), 1000) == 0.0
    assert guide_alone_share(replace(options, guidance=1.0), 1000) == 0.0
    assert guide_alone_share(replace(options, guide_alone_from=1000), 1000) == 0.0
    assert step_guidance(2.0, 1.0, 500, 500) == (1.0, 2.0) and step_guidance(2.0, 1.0, 500, 499) == (2.0, 1.0)


def test_the_benchmark_names_a_row_per_guide_alone_timestep():
    from fovcompletion.benchmark.runner import build_methods

    methods = build_methods(
        {"ours"}, [25], [2], 10, 1000, candidate_counts=(3,), guide_alone_froms=(None, 500)
    )
    assert [m.name for m in methods] == ["ours-steps25-best3", "ours-steps25-guidealone500-best3"]
    assert [m.sampler().guide_alone_from for m in methods] == [None, 500]


def test_the_bundles_autoguidance_is_the_default_zero_turns_it_off_and_the_callers_wins(guided_bundle):
    plain, guided = guided_bundle
    scan = synthetic_scan((6, 40, 30))

    def run(model, **options):
        sampler = SamplerOptions(steps=2, **options)
        return complete(scan, AFFINE, model=model, slices=2, extend_inferior_mm=30, sampler=sampler).image

    default = run(guided)
    np.testing.assert_array_equal(default, run(guided, autoguidance=2.0))
    np.testing.assert_array_equal(run(guided, autoguidance=0.0), run(plain))
    assert np.isfinite(default).all() and np.abs(default - run(plain)).max() > 1e-2
    assert np.abs(run(guided, autoguidance=5.0) - default).max() > 1e-2


def test_the_time_estimate_counts_a_guide_call_per_step_on_the_slices(guided_bundle, tmp_path):
    """Autoguidance adds one guide call per step on the slices alone (not on the UNet's doubled batch): priced at
    the guide's own timed calls (one timing is enough), at the UNet's where the guide was not timed, and not at
    all with autoguidance off; the run's own estimate (the start event) agrees."""
    import re

    from fovcompletion.estimate import estimate_seconds

    plain, guided = guided_bundle
    unet = {"seconds_per_unet_step_per_slice": 0.01, "seconds_per_unet_call": {"2": 0.04, "10": 0.1}}
    guide_timings = {
        "timed": {"1": 0.01, "5": 0.03},
        "timed once": {"5": 0.05},
        "slow": {"2": 10.0, "4": 20.0},
    }
    folders = {}
    for name, source, guide_calls in (
        ("plain", plain, None), ("untimed", guided, None), *((n, guided, c) for n, c in guide_timings.items())
    ):  # fmt: skip
        bundle = load_bundle(source)
        speed = {**unet, "guide_seconds_per_unet_call": guide_calls} if guide_calls else unet
        metadata = replace(bundle.metadata, guidance=2.0, speed={"cpu": speed})
        folders[name] = save_bundle(
            tmp_path / name, metadata, bundle.autoencoder, bundle.unet, guide=bundle.guide
        )
    run = (5, 10, 0, 40, 60)  # slices, steps, mm above, mm below, input height
    base = estimate_seconds(folders["plain"], *run)  # the UNet on 10 images per call: 0.1 s
    assert estimate_seconds(folders["timed"], *run) == pytest.approx(base * (0.1 + 0.03) / 0.1)
    assert estimate_seconds(folders["timed once"], *run) == pytest.approx(base * (0.1 + 0.05) / 0.1)
    # untimed: the UNet's line at the guide's 5 images, 0.04 + 3 x 0.0075
    assert estimate_seconds(folders["untimed"], *run) == pytest.approx(base * (0.1 + 0.0625) / 0.1)
    assert estimate_seconds(folders["timed"], *run, autoguidance=0.0) == pytest.approx(base)
    # the guide alone at every step (alone_from 0): the UNet once on the 5 slices, 0.025 + 5 x 0.0075
    bundle = load_bundle(folders["timed"])
    alone = replace(bundle.metadata, guide={**bundle.metadata.guide, "alone_from": 0})
    alone_folder = save_bundle(tmp_path / "alone", alone, bundle.autoencoder, bundle.unet, guide=bundle.guide)
    assert estimate_seconds(alone_folder, *run) == pytest.approx(base * (0.0625 + 0.03) / 0.1)

    def start_line(model, **options):
        events = []
        complete(
            synthetic_scan((6, 40, 30)), AFFINE, model=model, slices=2, extend_inferior_mm=30,
            sampler=SamplerOptions(steps=2, **options), progress=events.append,
        )  # fmt: skip
        return next(e.message for e in events if e.stage == "start")

    def seconds_per_step(model, **options):
        return float(re.search(r"\(([\d.e+-]+) s per UNet step", start_line(model, **options)).group(1))

    # two slices: the UNet on 4 images (0.055 s), the guide on 2 (10 s; on 4 it would be 20 s)
    ratio = seconds_per_step(folders["slow"]) / seconds_per_step(folders["slow"], autoguidance=0.0)
    assert ratio == pytest.approx((0.055 + 10.0) / 0.055, rel=0.01)
    # an untimed guide's price is the UNet's, and the line says so rather than passing it off as measured
    assert "measured; the guide not timed, priced as the UNet)" in start_line(folders["untimed"])
    assert start_line(folders["timed"]).endswith("measured)")
    assert start_line(folders["untimed"], autoguidance=0.0).endswith("measured)")
    # a run's own estimate prices the guide-alone steps at the UNet on the slices once: 0.04 + 0.015 against
    # 0.055 + 0.015 (the "timed" guide on two slices)
    ratio = seconds_per_step(folders["timed"], guide_alone_from=0) / seconds_per_step(folders["timed"])
    assert ratio == pytest.approx(0.055 / 0.07, rel=0.01)


def test_autoguidance_a_model_cannot_use_is_refused(guided_bundle):
    plain, guided = guided_bundle
    scan = synthetic_scan((6, 40, 30))
    with pytest.raises(
        InputError, match="autoguidance 1 cannot be used: random-test-bundle has no guide UNet"
    ):
        complete(scan, AFFINE, model=plain, extend_inferior_mm=30, sampler=SamplerOptions(autoguidance=1.0))
    with pytest.raises(InputError, match="autoguidance 1 cannot be used: the reference sampler"):
        reference = SamplerOptions("reference", 2, autoguidance=1.0)
        complete(scan, AFFINE, model=guided, extend_inferior_mm=30, sampler=reference)
    with pytest.raises(InputError, match="autoguidance must be a number >= 0"):
        complete(scan, AFFINE, model=guided, extend_inferior_mm=30, sampler=SamplerOptions(autoguidance=-1.0))
    # the reference sampler has no autoguidance: a bundle's guide is not applied there
    complete(
        scan, AFFINE, model=guided, slices=2, extend_inferior_mm=30, sampler=SamplerOptions("reference", 2)
    )


def test_the_command_line_takes_autoguidance_and_refuses_it_for_a_model_without_a_guide(
    guided_bundle, tmp_path, capsys
):
    import nibabel as nib

    plain, guided = guided_bundle
    source = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_scan((6, 40, 30)), AFFINE), str(source))
    common = ["--extend-inferior", "30", "--steps", "2", "--slices", "2", "--progress", "none"]
    out = tmp_path / "out.nii.gz"
    assert (
        main(
            [
                "complete",
                str(source),
                "-o",
                str(out),
                "--model",
                str(guided),
                "--autoguidance",
                "0.5",
                *common,
            ]
        )
        == 0
    )
    assert out.is_file()
    refused = tmp_path / "refused.nii.gz"
    code = main(
        ["complete", str(source), "-o", str(refused), "--model", str(plain), "--autoguidance", "1", *common]
    )
    assert code != 0 and not refused.exists()
    assert "has no guide UNet" in capsys.readouterr().err


def test_a_run_on_the_bundles_latents_becomes_its_guide_and_any_other_run_is_refused(tmp_path):
    from training_helpers import tiny_config, write_bids

    from fovcompletion.training.autoencoder import train_autoencoder
    from fovcompletion.training.diffusion import train_diffusion
    from fovcompletion.training.export import attach_guide, export_bundle

    root = write_bids(tmp_path / "bids")
    run = tmp_path / "run"
    config = tiny_config(root)
    train_autoencoder(config, run)
    train_diffusion(config, run)
    bundle = export_bundle(run, tmp_path / "bundle", guidance=2.0)
    guided = attach_guide(bundle, run, tmp_path / "guided", weight=0.5, version="9.9.9")
    metadata = read_metadata(guided)
    assert metadata.guide["weight"] == 0.5 and metadata.version == "9.9.9"
    assert metadata.guide["latent_scale_factor"] == read_metadata(bundle).latent_scale_factor
    record = metadata.training["guide"]  # how the guide was trained, for the model card
    assert record["unet_steps"] == 4 and record["training_seconds"] > 0
    assert record["config"]["lr"] == config.diffusion.lr
    assert load_bundle(guided).guide is not None
    other = create_random_bundle(tmp_path / "other", conditioning="masked_latent")
    with pytest.raises(InputError, match="was not trained on the latents of"):
        attach_guide(other, run, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(InputError, match="autoguidance must be a number >= 0"):
        attach_guide(bundle, run, tmp_path / "negative", weight=-1.0)
    assert not (tmp_path / "negative").exists()


def test_an_unconditional_bundle_is_guided_by_an_unconditional_guide(tmp_path):
    """Autoguidance needs no known region: a guide of the reference's unconditional kind reads the sample alone."""
    plain = with_output_weights(load_bundle(create_random_bundle(tmp_path / "zero", seed=6)))
    torch.manual_seed(7)
    args = {**GUIDE_ARGS, "in_channels": 4}
    guide = build_network("DiffusionModelUNet", args)
    with torch.no_grad():
        for parameter in guide.out.parameters():
            parameter.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(7))
    spec = {"class": "DiffusionModelUNet", "args": args, "latent_scale_factor": 1.0, "weight": 1.0}
    guided = save_bundle(
        tmp_path / "guided", replace(plain.metadata, guide=spec), plain.autoencoder, plain.unet, guide=guide
    )
    scan = synthetic_scan((6, 40, 30))

    def run(**options):
        sampler = SamplerOptions(steps=2, **options)
        return complete(scan, AFFINE, model=guided, slices=2, extend_inferior_mm=30, sampler=sampler).image

    with_guide = run()
    assert np.isfinite(with_guide).all() and np.abs(with_guide - run(autoguidance=0.0)).max() > 1e-2


def test_the_memory_check_counts_a_guide_only_where_it_needs_more_than_the_unet(guided_bundle, monkeypatch):
    """The guide's call follows the UNet's, never beside it: a smaller guide adds nothing to the peak, a wider
    one on its batch sets it (and the refusal then names --autoguidance 0), and without autoguidance it is not
    counted."""
    from fovcompletion import memory
    from fovcompletion.errors import OutOfMemoryError

    metadata = read_metadata(guided_bundle[1])
    unet_only = memory.estimate_peak_bytes(metadata, 4, 64, 64)
    assert memory.estimate_peak_bytes(metadata, 4, 64, 64, guide_batch=2) == unet_only  # GUIDE_ARGS: narrower
    wide = replace(metadata, guide={**metadata.guide, "args": {**GUIDE_ARGS, "channels": [64, 128]}})
    wide_peak = memory.estimate_peak_bytes(wide, 4, 64, 64, guide_batch=2)
    assert wide_peak > unet_only
    assert memory.estimate_peak_bytes(wide, 4, 64, 64, guide_batch=0) == unet_only

    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda device: (unet_only + wide_peak) // 2)
    memory.check_memory(metadata, cpu, 4, 64, 64, guided=True, guide_batch=2)  # fits
    memory.check_memory(wide, cpu, 4, 64, 64, guided=True, guide_batch=0)  # fits without the guide
    with pytest.raises(OutOfMemoryError, match=r"--guidance 1 .* or --autoguidance 0 \(no guide UNet\)$"):
        memory.check_memory(wide, cpu, 4, 64, 64, guided=True, guide_batch=2)
    monkeypatch.setattr(memory, "available_bytes", lambda device: unet_only // 2)
    with pytest.raises(OutOfMemoryError) as refused:  # the UNet's own call is too large: the guide is no help
        memory.check_memory(metadata, cpu, 4, 64, 64, guided=True, guide_batch=2)
    assert "--autoguidance" not in str(refused.value)


def test_a_run_hands_the_memory_check_its_guide_batch(guided_bundle, monkeypatch):
    """The engine prices the guide's call in the pre-flight check: the slices under autoguidance, none without."""
    from fovcompletion import pipeline

    seen = []
    real_check = pipeline.check_memory

    def recording_check(*args, **kwargs):
        seen.append(args[6] if len(args) > 6 else kwargs.get("guide_batch", 0))
        return real_check(*args, **kwargs)

    monkeypatch.setattr(pipeline, "check_memory", recording_check)
    for autoguidance in (1.0, 0.0):
        complete(
            synthetic_scan((6, 40, 30)), AFFINE, model=guided_bundle[1], slices=2, extend_inferior_mm=30,
            sampler=SamplerOptions(steps=2, autoguidance=autoguidance),
        )  # fmt: skip
    assert seen == [2, 0]
