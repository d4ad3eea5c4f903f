"""Tiny end-to-end training: each stage runs, writes checkpoints and logs, resumes exactly, and exports a
bundle that loads and completes a scan."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import LIA_AFFINE, spine_like, tiny_config, training_parser, write_bids

from fovcompletion.bundle import load_bundle, read_metadata
from fovcompletion.errors import FOVCompletionError, InputError
from fovcompletion.estimate import estimate_seconds
from fovcompletion.networks import build_network
from fovcompletion.training.autoencoder import train_autoencoder
from fovcompletion.training.checkpoints import LAST, load_checkpoint, rng_state, save_checkpoint
from fovcompletion.training.diffusion import EMA, latent_spread_ratio, masked_mse, train_diffusion
from fovcompletion.training.export import export_bundle


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One run through both stages (2 epochs each), shared by the tests below."""
    root = write_bids(tmp_path_factory.mktemp("bids"))
    run = tmp_path_factory.mktemp("runs") / "straight"
    config = tiny_config(root)
    train_autoencoder(config, run)
    train_diffusion(config, run)
    return root, run


def copy_of_trained_run(trained_run, folder: Path, without_unet: bool = False) -> Path:
    """A test's own copy of the shared run, to change freely; `without_unet` for a test of a new UNet stage."""
    shutil.copytree(trained_run[1], folder)
    if without_unet:
        shutil.rmtree(folder / "diffusion")
    return folder


def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stages_write_checkpoints_logs_and_samples(trained_run):
    _, run = trained_run
    for stage in ("autoencoder", "diffusion"):
        state = load_checkpoint(run / stage / LAST, restore_rng=False)
        assert state["epoch"] == 1 and state["step"] == 4
        with open(run / stage / "log.csv") as stream:
            rows = list(csv.DictReader(stream))
        assert [int(r["epoch"]) for r in rows] == [0, 1]
        assert all(np.isfinite(float(r["val_loss" if stage == "diffusion" else "val_l1"])) for r in rows)
        # the diffusion stage: each sample grid's latent spread against the truth's, and the layout error (the
        # EMA's clean estimate at t = 800 and 900; a trained UNet's is near 1, a barely trained one's above it)
        if stage == "diffusion":
            assert all(float(r["sample_spread"]) > 0 for r in rows)
            assert all(0 < float(r["val_layout_error"]) < 100 for r in rows)
        assert len(list((run / stage / "samples").glob("*.png"))) == 2
    assert json.loads((run / "config.json").read_text())["data"]["held_out"] == ["sub-c02"]
    manifest = json.loads((run / "data.json").read_text())
    assert [s["subject"] for s in manifest["held_out"]] == ["sub-c02"]
    assert "sub-c02" not in [s["subject"] for s in manifest["training"]]


def test_resume_continues_exactly(trained_run, tmp_path):
    """1 epoch + resume for 1 more equals 2 epochs straight, for both stages (weights, optimiser, RNG)."""
    root, straight = trained_run
    run = tmp_path / "resumed"
    config = tiny_config(root)
    config.autoencoder.epochs = config.diffusion.epochs = 1
    train_autoencoder(config, run)
    first = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)
    with pytest.raises(InputError, match="--resume"):
        train_autoencoder(config, run)
    config.autoencoder.epochs = 2
    train_autoencoder(config, run, resume=True)
    train_diffusion(config, run)
    config.diffusion.epochs = 2
    train_diffusion(config, run, resume=True)
    for stage in ("autoencoder", "diffusion"):
        a = load_checkpoint(straight / stage / LAST, restore_rng=False)
        b = load_checkpoint(run / stage / LAST, restore_rng=False)
        assert b["step"] == a["step"] == 4
        assert _tensors_equal(a["model"], b["model"]), stage
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert first["epoch"] == 0


def _resume_one_more_epoch(trained_run, tmp_path, **data_changes):
    """A copy of the trained run resumed for a third UNet epoch with other data settings; the latent caches
    before and after."""
    root, _ = trained_run
    run = copy_of_trained_run(trained_run, tmp_path / "changed")
    before = load_checkpoint(run / "diffusion" / "latents.pt", restore_rng=False)
    config = tiny_config(root)
    for name, value in data_changes.items():
        setattr(config.data, name, value)
    config.diffusion.epochs = 3
    train_diffusion(config, run, resume=True)
    return run, before, load_checkpoint(run / "diffusion" / "latents.pt", restore_rng=False)


def test_resume_with_more_data_encodes_again_and_keeps_the_scale(trained_run, tmp_path):
    """Adding phantoms to a resumed UNet run must not reuse stale latents, nor change the scale under it."""
    run, before, after = _resume_one_more_epoch(trained_run, tmp_path, phantoms=1)
    assert after["key"]["phantoms"] == 1
    assert after["scale"] == before["scale"]
    assert len(after["train"]["latents"]) > len(before["train"]["latents"])
    assert json.loads((run / "data.json").read_text())["phantoms_diffusion"] == 1
    assert load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["step"] == 6


def test_a_new_unet_takes_its_latent_scale_from_the_real_scans_alone(trained_run, tmp_path):
    """Phantoms, composites and templates train the UNet but must not set the scale of the latents it is
    given: the scale is what the engine multiplies every real scan's latent by."""
    root, straight = trained_run
    run = copy_of_trained_run(trained_run, tmp_path / "with-phantoms", without_unet=True)
    config = tiny_config(root)
    config.data.phantoms = 3
    config.diffusion.epochs = 1
    train_diffusion(config, run)
    with_phantoms = load_checkpoint(run / "diffusion" / "latents.pt", restore_rng=False)
    without = load_checkpoint(straight / "diffusion" / "latents.pt", restore_rng=False)
    assert len(with_phantoms["train"]["latents"]) > len(without["train"]["latents"])
    assert with_phantoms["scale"] == pytest.approx(without["scale"], rel=1e-6)


def test_a_further_trained_autoencoder_encodes_again_and_keeps_the_scale(trained_run, tmp_path):
    """Latents of an older autoencoder would train the UNet for a decoder it will never be shipped with."""
    root, _ = trained_run
    run = copy_of_trained_run(trained_run, tmp_path / "retrained")
    before = load_checkpoint(run / "diffusion" / "latents.pt", restore_rng=False)
    config = tiny_config(root)
    config.autoencoder.epochs = 3
    train_autoencoder(config, run, resume=True)
    config.diffusion.epochs = 3
    train_diffusion(config, run, resume=True)
    after = load_checkpoint(run / "diffusion" / "latents.pt", restore_rng=False)
    assert after["key"] == before["key"]
    assert not _tensors_equal(after["autoencoder"], before["autoencoder"])
    pairs = list(zip(after["train"]["latents"], before["train"]["latents"]))
    assert len(pairs) == len(before["train"]["latents"]) and not any(torch.equal(a, b) for a, b in pairs)
    assert after["scale"] == before["scale"]


def test_flattening_on_resume_encodes_again_and_is_exported(trained_run, tmp_path):
    """Switching the gain flattening on changes what the UNet sees: fresh latents, and the bundle says so."""
    run, before, after = _resume_one_more_epoch(trained_run, tmp_path, flatten_sigma_mm=30.0)
    assert "flatten_sigma_mm" not in before["key"]  # runs without it keep their cache key
    assert after["key"]["flatten_sigma_mm"] == 30.0
    assert len(after["train"]["latents"]) == len(before["train"]["latents"])
    pairs = zip(after["train"]["latents"], before["train"]["latents"])
    assert not all(torch.equal(a, b) for a, b in pairs)
    folder = export_bundle(run, tmp_path / "bundle")
    assert load_bundle(folder).metadata.intensity.flatten_sigma_mm == 30.0


def test_export_records_the_guidance_and_the_estimate_counts_it(trained_run, tmp_path):
    """The tiny run's UNet is conditioned (as the default preset's), so it can be guided; guidance doubles the
    UNet's batch, and with it the estimated time."""
    _, run = trained_run
    plain, guided = (
        export_bundle(run, tmp_path / "plain"),
        export_bundle(run, tmp_path / "guided", guidance=2.0),
    )
    assert (read_metadata(plain).guidance, read_metadata(guided).guidance) == (1.0, 2.0)
    run_size = (5, 50, 0.0, 128.0, 200.0)  # slices, steps, superior and inferior mm, the scan's height in mm
    assert estimate_seconds(guided, *run_size) == pytest.approx(2 * estimate_seconds(plain, *run_size))


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"foo": 1}',  # not a measurement: a typo, or another file
        '{"speed": {"cpu": "fast"}}',  # the run-time estimate of every completion would fail on it
        '{"speed": {"cpu": {"seconds_per_unet_step_per_slice": -1}}}',
    ],
)
def test_export_refuses_measurements_it_cannot_read_and_writes_nothing(trained_run, tmp_path, text):
    _, run = trained_run
    measurements = tmp_path / "metadata.json"
    measurements.write_text(text)
    with pytest.raises(InputError, match="--metadata-json") as raised:
        export_bundle(run, tmp_path / "bundle", metadata_json=measurements)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("setting", [{"steps": 0}, {"candidates": 0}, {"eta": -1.0}, {"eta": float("nan")}])
def test_export_with_sampler_settings_out_of_range_writes_nothing(trained_run, tmp_path, setting):
    """The bundle is verified before it appears: a refused setting leaves no folder, so the export can be run
    again at the same path."""
    _, run = trained_run
    with pytest.raises(FOVCompletionError) as raised:
        export_bundle(run, tmp_path / "bundle", **setting)
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []
    assert read_metadata(export_bundle(run, tmp_path / "bundle")).steps == 50


def test_export_refuses_an_extra_file_that_would_replace_the_bundles_own(trained_run, tmp_path):
    _, run = trained_run
    impostor = tmp_path / "extras" / "diffusion.safetensors"
    impostor.parent.mkdir()
    impostor.write_bytes(b"not weights")
    with pytest.raises(FOVCompletionError, match="would replace the bundle's own diffusion.safetensors"):
        export_bundle(run, tmp_path / "bundle", extra_files=[impostor])
    assert not (tmp_path / "bundle").exists()


def test_export_records_the_sampler_settings_and_runs_default_to_them(trained_run, tmp_path):
    """`export-bundle --steps --candidates` name the settings the model was measured best with; the estimate of
    a run that does not choose its own counts them (here 25 steps x 3 candidates: 1.5 times 50 steps)."""
    _, run = trained_run
    arguments = ["export-bundle", "--run", str(run), "-o", str(tmp_path / "tuned"), "--steps", "25"]
    args = training_parser().parse_args([*arguments, "--candidates", "3"])
    assert args.handler(args) == 0
    plain = export_bundle(run, tmp_path / "plain")
    tuned = read_metadata(tmp_path / "tuned")
    assert (tuned.steps, tuned.candidates) == (25, 3)
    assert (read_metadata(plain).steps, read_metadata(plain).candidates) == (50, 1)
    size = (0.0, 128.0, 200.0)  # superior and inferior mm, the scan's height in mm
    by_default = estimate_seconds(tmp_path / "tuned", 5, None, *size)
    assert by_default == pytest.approx(1.5 * estimate_seconds(plain, 5, None, *size))
    assert by_default == pytest.approx(estimate_seconds(plain, 5, 25, *size, candidates=3))


def test_checkpoint_round_trip_restores_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimiser = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimiser.step()
    path = save_checkpoint(
        tmp_path / "c.pt", {"model": model.state_dict(), "optimizer": optimiser.state_dict()}
    )
    expected = torch.rand(3)
    state = load_checkpoint(path)
    assert torch.equal(torch.rand(3), expected)
    restored = torch.nn.Linear(3, 2)
    restored.load_state_dict(state["model"])
    assert _tensors_equal(restored.state_dict(), model.state_dict())
    again = torch.optim.Adam(restored.parameters())
    again.load_state_dict(state["optimizer"])
    assert torch.equal(
        again.state_dict()["state"][0]["exp_avg"], optimiser.state_dict()["state"][0]["exp_avg"]
    )


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last_good_one(tmp_path, monkeypatch):
    """The new file's bytes are synced before the rename and the folder after it (a crashed machine could
    otherwise keep the rename and lose the bytes: an empty last checkpoint); a save that fails leaves the last
    good one as it was and no temporary file."""
    import fovcompletion.training.checkpoints as checkpoints

    path = save_checkpoint(tmp_path / "c.pt", {"step": 1})
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle):
        status = os.fstat(handle)
        events.append(("fsync", "folder" if stat.S_ISDIR(status.st_mode) else status.st_size > 0))
        real_fsync(handle)

    def replace(source, target):
        events.append(("replace", Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(checkpoints.os, "fsync", fsync)
    monkeypatch.setattr(checkpoints.os, "replace", replace)
    save_checkpoint(path, {"step": 2})
    assert events == [("fsync", True), ("replace", "c.pt"), ("fsync", "folder")]
    assert load_checkpoint(path, restore_rng=False)["step"] == 2

    def broken_save(payload, stream):
        stream.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 3})
    assert load_checkpoint(path, restore_rng=False)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_each_rank_resumes_its_own_random_stream(tmp_path):
    """Under DDP rank 0 saves every rank's RNG state; each rank restores its own, and a rank the run did not
    have keeps the seed it was given rather than take rank 0's (the ranks would draw the same noise)."""
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(rng_state())
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "c.pt", {}, rank_rng=states)
    expected = [torch.rand(3)]
    torch.manual_seed(2)
    expected.append(torch.rand(3))
    for rank in (0, 1):
        torch.manual_seed(99)
        load_checkpoint(path, rank=rank)
        assert torch.equal(torch.rand(3), expected[rank])
    torch.manual_seed(7)
    mine = torch.rand(3)
    torch.manual_seed(7)
    load_checkpoint(path, rank=2)
    assert torch.equal(torch.rand(3), mine)


def test_a_resume_that_turns_the_ema_on_starts_it_from_the_trained_weights(trained_run, tmp_path):
    """A UNet trained without an EMA, resumed with one: the EMA starts from the weights it resumes, not from the
    freshly built network (export ships the EMA)."""
    run = copy_of_trained_run(trained_run, tmp_path / "ema")
    last = run / "diffusion" / LAST
    state = load_checkpoint(last, restore_rng=False)
    state["ema"] = None  # as a run with --ema-decay 0 saves it
    state["step"] = 20_000  # a long run: past the EMA's warm-up, so whatever it starts from stays in it
    torch.manual_seed(0)
    trained = {
        k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    state["model"] = (
        trained  # far from the network a resume builds before loading (the tiny run barely moved)
    )
    torch.save(state, last)
    args = training_parser().parse_args(
        ["train-diffusion", "--run", str(run), "--resume", "--epochs", "3", "--ema-decay", "0.999"]
    )
    assert args.handler(args) == 0
    resumed = load_checkpoint(last, restore_rng=False)

    def distance(a: dict, b: dict) -> float:
        return sum(float((a[k].float() - b[k].float()).norm()) for k in a)

    built = build_network("DiffusionModelUNet", tiny_config(trained_run[0]).diffusion.args).state_dict()
    assert distance(resumed["ema"], resumed["model"]) < 0.1 * distance(built, trained)


def test_a_resumed_autoencoder_stage_keeps_what_the_unet_stage_recorded(trained_run, tmp_path):
    """data.json says which phantoms, composites and templates the UNet saw; an autoencoder stage resumed with
    nothing left to train must not erase that (the UNet's latents are still valid, so nothing writes it again)."""
    root, _ = trained_run
    run, _, _ = _resume_one_more_epoch(trained_run, tmp_path, phantoms=1)
    recorded = json.loads((run / "data.json").read_text())
    assert recorded["phantoms_diffusion"] == 1
    train_autoencoder(tiny_config(root), run, resume=True)  # its 2 epochs are done: nothing to train
    assert json.loads((run / "data.json").read_text()) == recorded
    bundle = read_metadata(export_bundle(run, tmp_path / "bundle"))
    assert bundle.training["phantoms"]["diffusion"] == 1


def test_masked_loss_ignores_padding_and_ema_tracks():
    prediction = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[..., 1] = 5.0  # error only in the padded column
    inside = torch.tensor([[[True, False], [True, False]]])
    assert masked_mse(prediction, target, inside) == 0
    assert masked_mse(prediction, target, None) > 0
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1000)
    assert torch.allclose(ema.model.weight, model.weight - 0.5)


def test_export_loads_and_completes(trained_run, tmp_path):
    from fovcompletion.pipeline import complete

    _, run = trained_run
    card = tmp_path / "card.md"
    card.write_text("# tiny\n")
    speed = tmp_path / "measured.json"
    speed.write_text(json.dumps({"speed": {"cpu": {"seconds_per_unet_step_per_slice": 0.1}}}))
    folder = export_bundle(run, tmp_path / "bundle", model_card=card, metadata_json=speed)
    bundle = load_bundle(folder)
    meta = bundle.metadata
    assert meta.training["held_out"] == ["sub-c02"]
    assert {s["subject"] for s in meta.training["scans"]} == {"sub-c01", "sub-l01", "sub-l02"}
    assert meta.training["config"]["data"]["canvas"] == [32, 32]
    assert "64 mm superior-inferior windows" in meta.description  # the run's window, not a preset's
    assert meta.latent_scale_factor == pytest.approx(
        load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["scale_factor"]
    )
    assert "CC0" in meta.licence and meta.speed["cpu"]["seconds_per_unet_step_per_slice"] == 0.1
    assert (folder / "MODEL_CARD.md").is_file()
    result = complete(spine_like((7, 40, 48), 9), LIA_AFFINE, model=folder, steps=2, extend_inferior_mm=20)
    assert result.image.shape == (5, 60, 48)  # 5 central slices, 40 rows + 20 mm at 1 mm
    assert np.isfinite(result.image).all()
    with pytest.raises(Exception, match="not empty"):
        export_bundle(run, folder)


def test_cli_parses_the_three_commands(tmp_path):
    from fovcompletion.cli import train

    parser = training_parser()
    args = parser.parse_args(
        [
            "train-autoencoder",
            "--run",
            str(tmp_path),
            "--data",
            "x",
            "--held-out",
            "a,b",
            "--epochs",
            "3",
            "--perceptual-weight",
            "0.001",
        ]
    )
    assert args.handler is train.run_autoencoder and args.epochs == 3 and args.perceptual_weight == 0.001
    args = parser.parse_args(["train-diffusion", "--run", str(tmp_path), "--resume", "--max-minutes", "5"])
    assert args.resume and args.max_minutes == 5
    with pytest.raises(InputError, match="train-autoencoder first"):
        args.handler(args)
    args = parser.parse_args(["export-bundle", "--run", str(tmp_path), "-o", str(tmp_path / "b")])
    assert args.handler is train.run_export


@pytest.mark.parametrize(
    "option",
    ["--validate-every 0", "--sample-every 0", "--iterations-per-epoch 0", "--batch-size 0", "--epochs -1"],
)
def test_a_count_the_loop_divides_by_is_refused_before_the_stage_starts(trained_run, tmp_path, option):
    """A zero the training loop divides or iterates by ends in one line before anything is read or written,
    not in a traceback after the first epoch (both stages, the run left as it was)."""
    run = copy_of_trained_run(trained_run, tmp_path / "counts")
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    parser = training_parser()
    for command in ("train-autoencoder", "train-diffusion"):
        args = parser.parse_args([command, "--run", str(run), "--resume", *option.split()])
        with pytest.raises(InputError, match=f"^{option.split()[0]} must be a whole number"):
            args.handler(args)
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


def test_cli_resume_can_switch_the_loss_weighting(trained_run, tmp_path):
    """`--snr-gamma 0` on a resumed UNet stage trains on with the plain MSE and records it."""

    run = copy_of_trained_run(trained_run, tmp_path / "plain-mse")
    parser = training_parser()
    args = parser.parse_args(
        ["train-diffusion", "--run", str(run), "--resume", "--epochs", "3", "--snr-gamma", "0"]
    )
    assert args.handler(args) == 0
    assert json.loads((run / "diffusion" / "config.json").read_text())["diffusion"]["snr_gamma"] is None
    assert load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["step"] == 6


def test_cli_new_unet_stage_chooses_its_prediction_type_and_the_bundle_keeps_it(trained_run, tmp_path):
    """`--prediction-type v_prediction` on a new UNet stage trains that target, and the exported bundle's
    scheduler tells the sampler; a resume that asks for another target is refused before anything changes."""
    run = copy_of_trained_run(trained_run, tmp_path / "v-prediction", without_unet=True)
    parser = training_parser()
    args = parser.parse_args(
        ["train-diffusion", "--run", str(run), "--epochs", "1", "--prediction-type", "v_prediction"]
    )
    assert args.handler(args) == 0
    stage_config = json.loads((run / "diffusion" / "config.json").read_text())
    assert stage_config["diffusion"]["scheduler"]["prediction_type"] == "v_prediction"
    checkpoint = (run / "diffusion" / LAST).read_bytes()
    refused = parser.parse_args(
        ["train-diffusion", "--run", str(run), "--resume", "--epochs", "2", "--prediction-type", "epsilon"]
    )
    with pytest.raises(InputError, match="trained to predict 'v_prediction'"):
        refused.handler(refused)
    assert (run / "diffusion" / LAST).read_bytes() == checkpoint
    export_bundle(run, tmp_path / "bundle")
    assert read_metadata(tmp_path / "bundle").scheduler.prediction_type == "v_prediction"


def test_a_resume_that_changes_the_unets_inputs_is_refused_and_leaves_the_run_as_it_was(
    trained_run, tmp_path
):
    """The UNet's conditioning fixes its input channels: asked for on resume it is refused in one line by the
    command, and a configuration that builds another UNet (through the API) fails to load the checkpoint
    with one line, before the stage's config.json is written."""
    from fovcompletion.training.config import set_conditioning

    root, _ = trained_run
    run = copy_of_trained_run(trained_run, tmp_path / "conditioning")
    before = {name: (run / "diffusion" / name).read_bytes() for name in ("config.json", LAST)}
    current = json.loads(before["config.json"])["diffusion"]["conditioning"]
    other = "none" if current != "none" else "masked_latent"
    parser = training_parser()
    refused = parser.parse_args(["train-diffusion", "--run", str(run), "--resume", "--conditioning", other])
    with pytest.raises(InputError, match=f"trained with {current!r}"):
        refused.handler(refused)
    config = tiny_config(root)
    set_conditioning(config, other)
    config.diffusion.epochs = 3
    with pytest.raises(InputError, match="does not fit the UNet these settings build") as raised:
        train_diffusion(config, run, resume=True)
    assert "\n" not in str(raised.value)
    assert {name: (run / "diffusion" / name).read_bytes() for name in before} == before


def test_resumed_stage_follows_a_cosine_schedule_and_records_it(trained_run, tmp_path):
    """`--lr-schedule cosine` on resume: every logged rate is the schedule's at that step, down to the floor,
    and the stage's config says so; an impossible floor is refused before anything runs."""
    from fovcompletion.training.lr_schedule import learning_rate

    run = copy_of_trained_run(trained_run, tmp_path / "cosine")
    parser = training_parser()
    refused = parser.parse_args(["train-diffusion", "--run", str(run), "--resume", "--lr-min", "1"])
    with pytest.raises(InputError, match="--lr-min"):
        refused.handler(refused)
    args = parser.parse_args(
        ["train-diffusion", "--run", str(run), "--resume", "--epochs", "5", "--lr-schedule", "cosine"]
        + ["--lr-min", "1e-5"]
    )
    assert args.handler(args) == 0
    saved = json.loads((run / "diffusion" / "config.json").read_text())["diffusion"]
    assert (saved["lr_schedule"], saved["lr_min"]) == ("cosine", 1e-5)
    with open(run / "diffusion" / "log.csv") as stream:
        rows = list(csv.DictReader(stream))
    planned = saved["epochs"] * saved["iterations_per_epoch"]
    resumed = [r for r in rows if int(r["epoch"]) >= 2]
    assert [int(r["epoch"]) for r in resumed] == [2, 3, 4]
    for row in resumed:  # the rate of each epoch's last iteration
        expected = learning_rate(
            int(row["step"]) - 1, saved["lr"], saved["iterations_per_epoch"], planned, "cosine", 1e-5
        )
        assert float(row["lr"]) == pytest.approx(expected)
    assert float(resumed[-1]["lr"]) == pytest.approx(1e-5)
    assert float(resumed[0]["lr"]) > float(resumed[1]["lr"]) > float(resumed[2]["lr"])


def test_resume_before_the_first_checkpoint_starts_the_stage_and_says_so(trained_run, tmp_path, capsys):
    """A time-sliced script may pass --resume from its first slice on: the stage starts, with a line that says
    there was nothing to resume."""
    root, _ = trained_run
    run = copy_of_trained_run(trained_run, tmp_path / "first-slice", without_unet=True)
    config = tiny_config(root)
    config.diffusion.epochs = 1
    train_diffusion(config, run, resume=True)
    assert "--resume: no checkpoint at" in capsys.readouterr().err
    assert load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["epoch"] == 0


def test_time_budget_is_per_invocation_and_stops_with_a_checkpoint(trained_run, tmp_path):
    """`--max-minutes` slices a long run: a spent budget ends the stage after the epoch in hand with a
    checkpoint; a resume gets its own budget however long the run has already trained (the log still counts
    the run's whole time)."""
    root, _ = trained_run
    run = copy_of_trained_run(trained_run, tmp_path / "sliced")
    config = tiny_config(root)
    config.diffusion.epochs = 5
    config.max_minutes = 1e-9  # spent by the end of the first epoch
    train_diffusion(config, run, resume=True)
    stopped = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert stopped["epoch"] == 2
    stopped["elapsed_s"] = 10 * 3600.0  # as if the run had trained for ten hours before
    save_checkpoint(run / "diffusion" / LAST, stopped)
    config.max_minutes = 60
    train_diffusion(config, run, resume=True)
    finished = load_checkpoint(run / "diffusion" / LAST, restore_rng=False)
    assert finished["epoch"] == 4 and finished["step"] == stopped["step"] + 4
    with open(run / "diffusion" / "log.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[-1]["elapsed_s"]) >= 10 * 3600.0


def test_autoencoder_resumed_with_a_cosine_ends_at_its_floor(trained_run, tmp_path):
    """The autoencoder stage takes the same schedule options: a constant-rate run resumed with a cosine
    ends its planned iterations at `--lr-min`."""
    run = copy_of_trained_run(trained_run, tmp_path / "ae-cosine")
    args = training_parser().parse_args(
        ["train-autoencoder", "--run", str(run), "--resume", "--epochs", "4", "--lr-schedule", "cosine"]
        + ["--lr-min", "1e-5"]
    )
    assert args.handler(args) == 0
    with open(run / "autoencoder" / "log.csv") as stream:
        rates = [float(row["lr"]) for row in csv.DictReader(stream) if int(row["epoch"]) >= 2]
    assert len(rates) == 2 and rates[0] > rates[1] == pytest.approx(1e-5)


def test_perceptual_loss_without_weights_is_a_clear_error(monkeypatch):
    from fovcompletion.training import autoencoder
    from fovcompletion.training.config import AutoencoderConfig

    assert autoencoder.build_perceptual(AutoencoderConfig(), torch.device("cpu"), verbose=False) is None

    def offline(*args, **kwargs):
        raise RuntimeError("no internet")

    monkeypatch.setattr("monai.losses.PerceptualLoss", offline)
    with pytest.raises(InputError, match="--perceptual-weights"):
        autoencoder.build_perceptual(AutoencoderConfig(perceptual_weight=0.001), torch.device("cpu"), False)


def test_log_lines_stay_off_the_progress_bar(capsys):
    """An epoch's summary line starts a line of its own in a log file, not the tail of the bar's last redraw."""
    from fovcompletion.training.logs import Progress, log_line

    progress = Progress(total=10, done=0, label="UNet", enabled=True)
    progress.update(loss=0.5)
    log_line("epoch 0, step 1, loss 0.5")
    progress.close()
    lines = capsys.readouterr().err.replace("\r", "\n").split("\n")
    assert any(line.startswith("[") and line.endswith("] epoch 0, step 1, loss 0.5") for line in lines), lines


def test_latent_spread_ratio_measures_only_the_generated_cells():
    """1 for latents of the truth's spread, k for k times it, whatever the known cells hold: the check that
    flags a diverging sampler (speckle) or a grey mean, which the loss does not show."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 4, 8, 8, generator=generator)
    generated = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    generated[:, :, 4:] = True
    drawn = torch.randn(3, 4, 8, 8, generator=generator)
    assert latent_spread_ratio(drawn, truth, generated) == pytest.approx(1.0, abs=0.25)
    diverged = torch.where(generated, 10 * drawn, truth)
    assert latent_spread_ratio(diverged, truth, generated) == pytest.approx(
        10 * latent_spread_ratio(drawn, truth, generated), rel=1e-5
    )
    grey = torch.where(generated, torch.zeros_like(truth), 100 * truth)
    assert latent_spread_ratio(grey, truth, generated) == 0.0
