"""Training stages given broken or mismatched inputs, or cancelled mid-save: one line, a non-zero exit, and the run
as it was (the last good checkpoint, config.json and log.csv untouched, nothing half-written)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_helpers import tiny_config, training_parser, write_bids

from fovcompletion.bundle import load_state_dict_file, sha256_of
from fovcompletion.cli import main
from fovcompletion.errors import BundleError, FOVCompletionError, InputError
from fovcompletion.training.autoencoder import train_autoencoder
from fovcompletion.training.checkpoints import LAST, load_checkpoint, save_checkpoint
from fovcompletion.training.config import TrainConfig
from fovcompletion.training.diffusion import train_diffusion
from fovcompletion.training.export import export_bundle
from fovcompletion.training.initialise import adopt_bundle_unet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run through both stages (1 epoch each), its config as a file, and the bundle exported from it."""
    root = write_bids(tmp_path_factory.mktemp("bids"))
    folder = tmp_path_factory.mktemp("robustness")
    run = folder / "run"
    config = tiny_config(root)
    config.autoencoder.epochs = config.diffusion.epochs = 1
    train_autoencoder(config, run)
    train_diffusion(config, run)
    config_file = folder / "tiny.json"
    config.save(config_file)
    return root, run, config_file, export_bundle(run, folder / "bundle")


def copy_run(trained, folder: Path, without_unet: bool = False) -> Path:
    shutil.copytree(trained[1], folder)
    if without_unet:
        shutil.rmtree(folder / "diffusion")
    return folder


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def one_line_refusal(call, *args, error: type = InputError, match: str | None = None, **kwargs) -> str:
    with pytest.raises(error, match=match) as raised:
        call(*args, **kwargs)
    assert "\n" not in str(raised.value), str(raised.value)
    return str(raised.value)


def logged_epochs(stage_dir: Path) -> list[int]:
    with open(stage_dir / "log.csv") as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def rewrite_checkpoint(path: Path, change) -> None:
    """A checkpoint changed as a damaged, mixed-up or hand-assembled one would be."""
    state = load_checkpoint(path, restore_rng=False)
    save_checkpoint(path, change(state))


def without_decoder(state: dict) -> dict:
    """Another network's weights: an autoencoder of other layers."""
    return {k: v for k, v in state.items() if not k.startswith("decoder.")}


# --- 1. a cancel that lands while a checkpoint is being written ---------------------------------------------


def signal_inside_the_first_epoch_save(monkeypatch, signum: int) -> list[bool]:
    """`signum` delivered while torch.save writes the first epoch's checkpoint (the latent cache, saved earlier,
    has no epoch); returns the list that records that it was sent."""
    real_save = torch.save
    sent: list[bool] = []

    class SignallingStream:
        def __init__(self, stream) -> None:
            self.stream = stream

        def write(self, data) -> int:
            if not sent:
                sent.append(True)
                os.kill(os.getpid(), signum)
            return self.stream.write(data)

        def __getattr__(self, name: str):
            return getattr(self.stream, name)

    def save(payload, stream, *args, **kwargs):
        if isinstance(payload, dict) and "epoch" in payload and not sent:
            stream = SignallingStream(stream)
        return real_save(payload, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return sent


@pytest.fixture
def cancel_inside_the_first_epoch_save(monkeypatch):
    """SIGTERM, as `kill` or a batch system sends it."""
    return signal_inside_the_first_epoch_save(monkeypatch, signal.SIGTERM)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on Windows")
def test_a_closed_terminal_during_a_save_also_waits_for_the_checkpoint(tmp_path, monkeypatch):
    """The command line turns SIGHUP into a cancel as it does SIGTERM, with a handler that raises KeyboardInterrupt
    (installed here itself: under nohup the command leaves SIGHUP ignored): the save it lands in finishes first."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    sent = signal_inside_the_first_epoch_save(monkeypatch, signal.SIGHUP)
    previous = signal.signal(signal.SIGHUP, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(
                tmp_path / LAST, {"stage": "autoencoder", "epoch": 0, "model": {"w": torch.ones(3)}}
            )
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert sent == [True]
    assert torch.equal(load_checkpoint(tmp_path / LAST, restore_rng=False)["model"]["w"], torch.ones(3))


@pytest.mark.parametrize("stage", ["autoencoder", "diffusion"])
def test_a_cancel_during_a_checkpoint_save_ends_cleanly_with_that_epoch_saved_and_logged_once(
    trained, tmp_path, stage, cancel_inside_the_first_epoch_save
):
    """The save finishes before the cancel is honoured: exit 130 with no traceback, the epoch's checkpoint in
    place, its log row written once, no temporary file; a resume logs each epoch once."""
    config_file = trained[2]
    if stage == "autoencoder":
        run = tmp_path / "run"
        command = ["train-autoencoder", "--run", str(run), "--config", str(config_file)]
    else:
        run = copy_run(trained, tmp_path / "run", without_unet=True)
        command = ["train-diffusion", "--run", str(run)]
    options = ["--threads", "1", "--device", "cpu", "--batch-size", "2", "--epochs", "2"]
    assert main([*command, *options]) == 130
    assert cancel_inside_the_first_epoch_save == [True]
    stage_dir = run / stage
    assert load_checkpoint(stage_dir / LAST, restore_rng=False)["epoch"] == 0
    assert logged_epochs(stage_dir) == [0]
    assert not [p.name for p in stage_dir.iterdir() if p.name.startswith(".")]
    assert main([*command, *options, "--resume"]) == 0
    assert logged_epochs(stage_dir) == [0, 1]
    assert load_checkpoint(stage_dir / LAST, restore_rng=False)["epoch"] == 1


@pytest.mark.parametrize("stage", ["autoencoder", "diffusion"])
def test_an_epoch_whose_checkpoint_was_not_saved_is_not_logged(trained, tmp_path, stage, monkeypatch):
    """A full disk at the first epoch's save: the log gets no row for it, so the resume that trains the epoch
    again logs it once."""
    real_save, failed = torch.save, []

    def save(payload, stream, *args, **kwargs):
        if isinstance(payload, dict) and "epoch" in payload and not failed:
            failed.append(True)
            raise OSError(28, "No space left on device")
        return real_save(payload, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = copy_run(trained, tmp_path / "run", without_unet=True) if stage == "diffusion" else tmp_path / "run"
    config = tiny_config(trained[0])
    train = train_autoencoder if stage == "autoencoder" else train_diffusion
    with pytest.raises(OSError, match="No space left"):
        train(config, run)
    log = run / stage / "log.csv"
    assert not log.exists() or logged_epochs(run / stage) == []
    train(config, run, resume=True)
    assert logged_epochs(run / stage) == [0, 1]


# --- 2. broken or mismatched checkpoints and configurations ----------------------------------------------------


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _list(path: Path) -> None:
    torch.save([1, 2], path)


def _no_optimizer(path: Path) -> None:
    rewrite_checkpoint(path, lambda s: {k: v for k, v in s.items() if k != "optimizer"})


def _other_network(path: Path) -> None:
    rewrite_checkpoint(path, lambda s: {**s, "model": without_decoder(s["model"])})


def _unets_checkpoint(path: Path) -> None:
    shutil.copyfile(path.parents[1] / "diffusion" / LAST, path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_empty, "cannot read checkpoint .*: EOFError"),
        (_list, "not a checkpoint: it holds a list"),
        (_no_optimizer, "not a complete checkpoint: it has no 'optimizer'"),
        (_other_network, "does not fit the autoencoder these settings build .*Missing key"),
        (_unets_checkpoint, "checkpoint of the 'diffusion' stage, not of the 'autoencoder' stage"),
    ],
)
def test_an_autoencoder_resume_from_a_broken_checkpoint_is_one_line_and_changes_nothing(
    trained, tmp_path, damage, message
):
    """Also with new options: config.json is rewritten only once the checkpoint has loaded."""
    root = trained[0]
    run = copy_run(trained, tmp_path / "run")
    damage(run / "autoencoder" / LAST)
    before = snapshot(run)
    config = tiny_config(root)
    config.autoencoder.epochs = 3
    one_line_refusal(train_autoencoder, config, run, match=message, resume=True)
    assert snapshot(run) == before


def _autoencoders_checkpoint(path: Path) -> None:
    shutil.copyfile(path.parents[1] / "autoencoder" / LAST, path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_empty, "cannot read checkpoint .*: EOFError"),
        (_list, "not a checkpoint: it holds a list"),
        (_no_optimizer, "not a complete checkpoint: it has no 'optimizer'"),
        (_autoencoders_checkpoint, "checkpoint of the 'autoencoder' stage, not of the 'diffusion' stage"),
    ],
)
def test_a_unet_resume_from_a_broken_checkpoint_is_one_line_and_changes_nothing(
    trained, tmp_path, damage, message
):
    run = copy_run(trained, tmp_path / "run")
    damage(run / "diffusion" / LAST)
    before = snapshot(run)
    config = tiny_config(trained[0])
    config.diffusion.epochs = 3
    one_line_refusal(train_diffusion, config, run, match=message, resume=True)
    assert snapshot(run) == before


def test_an_unreadable_latent_cache_is_encoded_again_with_the_unets_scale(trained, tmp_path):
    """latents.pt is the run's own cache: a damaged one is made again (at the resumed UNet's scale), not refused."""
    run = copy_run(trained, tmp_path / "run")
    cache = run / "diffusion" / "latents.pt"
    scale = load_checkpoint(cache, restore_rng=False)["scale"]
    cache.write_bytes(cache.read_bytes()[:1000])  # cut short, as by a full disk
    config = tiny_config(trained[0])
    config.diffusion.epochs = 2
    train_diffusion(config, run, resume=True)
    assert load_checkpoint(cache, restore_rng=False)["scale"] == scale
    assert load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["epoch"] == 1


@pytest.mark.parametrize("damage", [_other_network, _unets_checkpoint])
def test_a_unet_stage_on_a_run_whose_autoencoder_is_not_its_own_is_one_line_and_writes_nothing(
    trained, tmp_path, damage
):
    run = copy_run(trained, tmp_path / "run")
    damage(run / "autoencoder" / LAST)
    shutil.rmtree(run / "diffusion")  # a new UNet stage, which would encode latents
    before = snapshot(run)
    one_line_refusal(train_diffusion, tiny_config(trained[0]), run)
    assert snapshot(run) == before and not (run / "diffusion").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (_autoencoders_checkpoint, "not of the 'diffusion' stage"),
        (
            lambda p: rewrite_checkpoint(p, lambda s: {k: v for k, v in s.items() if k != "config"}),
            "'config'",
        ),
        (
            lambda p: rewrite_checkpoint(
                p, lambda s: {**s, "autoencoder": without_decoder(s["autoencoder"])}
            ),
            "does not fit the autoencoder",
        ),
    ],
)
def test_export_of_a_broken_checkpoint_is_one_line_and_writes_nothing(trained, tmp_path, damage, message):
    run = copy_run(trained, tmp_path / "run")
    damage(run / "diffusion" / LAST)
    one_line_refusal(export_bundle, run, tmp_path / "bundle", match=message)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    "text", ["[1, 2]", '{"diffusion": [1]}', '{"data": {"canvas": [32, 32]}, "augment": 3}']
)
@pytest.mark.parametrize("stage_saved_its_own", [True, False])
def test_a_run_configuration_of_the_wrong_shape_is_one_line(trained, tmp_path, text, stage_saved_its_own):
    """A resume reads the UNet stage's own settings, or the run's where the stage saved none."""
    run = copy_run(trained, tmp_path / "run")
    if stage_saved_its_own:
        (run / "diffusion" / "config.json").write_text(text)
    else:
        (run / "diffusion" / "config.json").unlink()
        (run / "config.json").write_text(text)
    before = snapshot(run)
    one_line_refusal(train_diffusion, None, run, match="must be a JSON object", resume=True)
    assert snapshot(run) == before


def test_an_empty_weight_file_is_one_line(tmp_path):
    """`import-checkpoint --vqvae empty.pt`, or a bundle's emptied weight file."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    one_line_refusal(load_state_dict_file, empty, error=BundleError, match="cannot read weights empty.pt")


def rehashed_bundle(bundle: Path, folder: Path, role: str, key_start: str) -> Path:
    """A copy of `bundle` whose `role` weights have one tensor of the wrong shape, re-hashed so that it passes
    the sha256 check (a bundle written by hand, or by a broken tool)."""
    shutil.copytree(bundle, folder)
    path = folder / f"{role}.safetensors"
    weights = load_file(str(path))
    key = next(k for k in weights if k.startswith(key_start) and weights[k].ndim == 4)
    weights[key] = torch.cat([weights[key], weights[key][:1]])
    save_file(weights, str(path))
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["weights"][role]["sha256"] = sha256_of(path)
    (folder / "bundle.json").write_text(json.dumps(metadata))
    return folder


def test_a_unet_stage_from_a_bundle_whose_unet_does_not_fit_is_refused_before_anything_is_written(
    trained, tmp_path
):
    bundle = rehashed_bundle(trained[3], tmp_path / "bundle", "diffusion", "")
    run = copy_run(trained, tmp_path / "run", without_unet=True)
    config = tiny_config(trained[0])
    adopt_bundle_unet(config, str(bundle))
    text = one_line_refusal(train_diffusion, config, run)
    assert "does not fit the UNet" in text and "size mismatch" in text
    assert not (run / "diffusion").exists()


# --- 3. and 4. a new run from a bundle that does not fit, or that fails to start ---------------------------------


def new_run_command(root: Path, run: Path, *options: str) -> list[str]:
    common = ["--run", str(run), "--threads", "1", "--device", "cpu", "--batch-size", "2", "--epochs", "1"]
    return ["train-autoencoder", *common, "--data", str(root), "--held-out", "sub-c02", *options]


def test_a_bundle_whose_decoder_does_not_fit_its_own_widths_is_refused_and_leaves_no_run(trained, tmp_path):
    """Only --decoder-channels may give the run a fresh decoder; a bundle whose decoder weights do not fit the
    widths it names is broken (as `models --check` says), and the new run leaves no folder behind."""
    bundle = rehashed_bundle(trained[3], tmp_path / "bundle", "autoencoder", "decoder.")
    run = tmp_path / "run"
    args = training_parser().parse_args(new_run_command(trained[0], run, "--init-from", str(bundle)))
    one_line_refusal(args.handler, args, match="does not fit the run's: size mismatch for decoder")
    assert not run.exists()


def test_a_new_run_that_fails_to_start_leaves_nothing_behind(trained, tmp_path):
    """Perceptual weights that cannot be loaded are found after the data: no config.json, data.json or empty
    stage folder is left, so the same command can be run again once fixed."""
    run = tmp_path / "run"
    options = ["--perceptual-weight", "0.001", "--perceptual-weights", str(tmp_path / "nosuch.pth")]
    args = training_parser().parse_args(new_run_command(trained[0], run, *options))
    one_line_refusal(args.handler, args, error=FOVCompletionError, match="perceptual")
    assert not run.exists()


# --- 5. a UNet checkpoint made for other latents ----------------------------------------------------------------


def as_kl2(config: TrainConfig) -> None:
    """As a kl2 run's: intensities with headroom, so other latents from an autoencoder of the same shape."""
    config.data.intensity_percentiles, config.data.intensity_clip = (0.0, 99.5), False


def another_seed(config: TrainConfig) -> None:
    """Another run of the same settings: another autoencoder, another latent space."""
    config.seed = 1


def other_run(trained, folder: Path, change) -> Path:
    """Another tiny run through both stages (1 iteration each), differing from the shared one by `change`."""
    config = tiny_config(trained[0])
    config.autoencoder.epochs = config.diffusion.epochs = 1
    config.autoencoder.iterations_per_epoch = config.diffusion.iterations_per_epoch = 1
    change(config)
    train_autoencoder(config, folder)
    train_diffusion(config, folder)
    return folder


@pytest.mark.parametrize(
    "change, differing", [(as_kl2, "intensity_percentiles"), (another_seed, "autoencoder's weights")]
)
def test_a_unet_resume_refuses_another_runs_checkpoint(trained, tmp_path, change, differing):
    other = other_run(trained, tmp_path / "other", change)
    run = copy_run(trained, tmp_path / "run")
    shutil.copyfile(other / "diffusion" / LAST, run / "diffusion" / LAST)
    before = snapshot(run)
    config = tiny_config(trained[0])
    config.diffusion.epochs = 3
    text = one_line_refusal(train_diffusion, config, run, resume=True)
    assert "UNet for other latents than this run's" in text and differing in text
    assert snapshot(run) == before


def test_a_unet_started_anew_on_an_autoencoder_trained_anew_can_be_resumed(trained, tmp_path):
    """The autoencoder stage run again gives the same weights under a new id, so the latent cache is kept: the UNet
    started anew, as the refusal above advises, names the run's autoencoder, not the cache's, and resumes."""
    run = copy_run(trained, tmp_path / "run")
    config = tiny_config(trained[0])
    config.autoencoder.epochs = config.diffusion.epochs = 1
    earlier = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)["autoencoder_id"]
    shutil.rmtree(run / "autoencoder")
    (run / "config.json").unlink()
    train_autoencoder(config, run)
    anew = load_checkpoint(run / "autoencoder" / LAST, restore_rng=False)["autoencoder_id"]
    assert anew != earlier
    (run / "diffusion" / LAST).unlink()
    train_diffusion(config, run)
    assert load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["autoencoder_id"] == anew
    config.diffusion.epochs = 2
    train_diffusion(config, run, resume=True)
    assert load_checkpoint(run / "diffusion" / LAST, restore_rng=False)["epoch"] == 1
