"""Bundles: verified hashes, strict architectures, no pickled code, discovery."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from fovcompletion.bundle import load_bundle, load_state_dict_file, read_metadata, verify_bundle
from fovcompletion.cli import main
from fovcompletion.errors import BundleError, InputError
from fovcompletion.registry import ENV_MODEL_PATH, list_bundles, resolve_bundle


def copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_round_trip_loads_the_saved_networks(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    metadata = read_metadata(tiny_bundle)
    assert bundle.name == "tiny-test"
    assert set(metadata.weights) == {"autoencoder", "diffusion"}
    assert all(len(w.sha256) == 64 for w in metadata.weights.values())
    again = load_bundle(tiny_bundle)
    first, second = bundle.unet.state_dict(), again.unet.state_dict()
    assert list(first) == list(second)
    for a, b in zip(first.values(), second.values()):
        assert torch.equal(a, b)


def test_a_device_is_named_as_the_engine_names_it(tiny_bundle):
    """The Python API takes the command line's device names; one this machine lacks is a one-line user error."""
    assert next(load_bundle(tiny_bundle, "auto").unet.parameters()).device.type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        load_bundle(tiny_bundle, "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            load_bundle(tiny_bundle, "cuda")


def test_modified_weight_file_is_refused(tiny_bundle, tmp_path):
    folder = copy_bundle(tiny_bundle, tmp_path / "tampered")
    weights = folder / "diffusion.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(folder)


def test_missing_weight_file_is_refused(tiny_bundle, tmp_path):
    folder = copy_bundle(tiny_bundle, tmp_path / "incomplete")
    (folder / "autoencoder.safetensors").unlink()
    with pytest.raises(BundleError, match="missing"):
        verify_bundle(folder)


def test_architecture_mismatch_is_refused(tiny_bundle, tmp_path):
    folder = copy_bundle(tiny_bundle, tmp_path / "mismatch")
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["diffusion"]["args"]["channels"] = [16, 64]
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(folder)


class _Exploit:
    def __reduce__(self):
        return (Path("/tmp/fovcompletion-pwned").touch, ())


def test_pickled_code_is_never_executed(tmp_path):
    marker = Path("/tmp/fovcompletion-pwned")
    marker.unlink(missing_ok=True)
    weights = tmp_path / "evil.pt"
    weights.write_bytes(pickle.dumps({"weight": _Exploit()}))
    with pytest.raises(BundleError):
        load_state_dict_file(weights)
    assert not marker.exists()


def test_registry_finds_bundles_on_the_environment_path(tiny_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny_bundle.parent))
    monkeypatch.setenv("FOVCOMPLETION_HOME", str(tmp_path / "home"))
    names = {info.name: info.source for info in list_bundles()}
    assert names.get("tiny-test") == "env"
    assert resolve_bundle("tiny-test") == tiny_bundle
    with pytest.raises(BundleError, match="no model bundle named"):
        resolve_bundle("does-not-exist")
    assert main(["models"]) == 0
    assert "tiny-test" in capsys.readouterr().out


def test_a_folder_here_named_like_a_bundle_does_not_hide_it(tiny_bundle, tmp_path, monkeypatch):
    """`--model tiny-test` with an unrelated folder of that name in the working directory: the registered
    bundle; written as a path (`./tiny-test`), the folder."""
    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny_bundle.parent))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-test").mkdir()
    assert resolve_bundle("tiny-test") == tiny_bundle
    assert resolve_bundle("./tiny-test") == Path("./tiny-test")
    with pytest.raises(BundleError, match="bundle.json is missing"):
        read_metadata(resolve_bundle("./tiny-test"))


def test_models_command_reports_a_corrupted_bundle(tiny_bundle, tmp_path, monkeypatch, capsys):
    folder = copy_bundle(tiny_bundle, tmp_path / "models" / "broken")
    (folder / "diffusion.safetensors").write_bytes(b"not weights")
    monkeypatch.setenv(ENV_MODEL_PATH, str(folder.parent))
    assert main(["models"]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_models_check_loads_the_networks_that_the_listing_only_hashes(tiny_bundle, tmp_path, capsys):
    """`models --check` is what Slicer's "Add a bundle" runs in the engine's process: weights that do not fit the
    architecture pass the hash check (bundle.json is not hashed) and must be refused there, in one line."""
    assert main(["models", "--check", str(tiny_bundle)]) == 0
    assert "tiny-test: ok" in capsys.readouterr().out
    folder = copy_bundle(tiny_bundle, tmp_path / "mismatch")
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["diffusion"]["args"]["channels"] = [16, 64]
    (folder / "bundle.json").write_text(json.dumps(metadata))
    verify_bundle(folder)  # metadata and hashes are fine
    assert main(["models", "--check", str(folder)]) == 1
    error = capsys.readouterr().err
    assert "diffusion UNet weights do not match the bundle's architecture" in error
    assert error.count("\n") == 1
    assert main(["models", "--check", str(folder), "--json"]) == 1  # the same refusal, for a program
    row = json.loads(capsys.readouterr().out)
    assert row["status"].startswith("INVALID: ") and "do not match the bundle's architecture" in row["status"]
    assert (row["name"], row["path"]) == ("mismatch", str(folder))  # as the listing names it
    assert main(["models", "--check", str(tiny_bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "tiny-test",
        "path": str(tiny_bundle),
        "status": "ok",
    }


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda m: [m],  # not an object at all
        lambda m: {**m, "weights": ["autoencoder.safetensors"]},
        lambda m: {**m, "format_version": "two"},
        lambda m: {**m, "diffusion": {"args": m["diffusion"]["args"]}},  # no network class
    ],
)
def test_a_malformed_bundle_json_is_one_line_and_never_hides_the_other_bundles(
    tiny_bundle, tmp_path, monkeypatch, capsys, corrupt
):
    """One bad bundle.json on the search path must not break listing, lookup or the Slicer panel's setup."""
    models = tmp_path / "models"
    copy_bundle(tiny_bundle, models / "good")
    broken = copy_bundle(tiny_bundle, models / "broken")
    metadata = json.loads((broken / "bundle.json").read_text())
    (broken / "bundle.json").write_text(json.dumps(corrupt(metadata)))
    monkeypatch.setenv(ENV_MODEL_PATH, str(models))
    monkeypatch.setenv("FOVCOMPLETION_HOME", str(tmp_path / "home"))
    with pytest.raises(BundleError) as raised:
        read_metadata(broken)
    assert "\n" not in str(raised.value)
    assert [info.path for info in list_bundles() if info.source == "env"] == [models / "good"]
    assert resolve_bundle("tiny-test") == models / "good"
    with pytest.raises(BundleError, match="malformed|not a FOVCompletion bundle|names no network"):
        resolve_bundle("broken")  # named, but unreadable: why, not "no model bundle named"
    assert main(["models"]) == 1
    assert "INVALID" in capsys.readouterr().out


def _edited(metadata: dict, path: str, value) -> dict:
    """A copy of bundle.json with the entry at `path` ("a/b/c") set to `value`."""
    edited = json.loads(json.dumps(metadata))
    *parents, last = path.split("/")
    target = edited
    for key in parents:
        target = target[key]
    target[last] = value
    return edited


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("latent_scale_factor", float("nan"), "latent_scale_factor must be a number > 0"),
        ("latent_scale_factor", 0, "latent_scale_factor must be a number > 0"),
        ("steps", float("inf"), "malformed"),
        ("speed", {"cpu": "fast"}, r"speed\['cpu'\] must be an object"),
        (
            "speed",
            {"cpu": {"seconds_per_unet_step_per_slice": "slow"}},
            "seconds_per_unet_step_per_slice must be",
        ),
        ("speed", {"cpu": {}}, "seconds_per_unet_step_per_slice must be"),
        *(
            (
                "speed",
                {"cpu": {"seconds_per_unet_step_per_slice": 0.1, "seconds_per_unet_call": calls}},
                "call must map",
            )
            for calls in ({"two": 0.1}, {"\u00b2": 0.1}, {"1": 0.1, "01": 0.2}, {"0": 0.1})
        ),
        (
            "speed",
            {"cpu": {"seconds_per_unet_step_per_slice": 0.1, "guide_seconds_per_unet_call": {"1": -0.1}}},
            "guide_seconds_per_unet_call must map",
        ),
        ("weights/diffusion/file", None, "weight file must be a file name in the bundle"),
        (
            "weights/diffusion/file",
            "../elsewhere.safetensors",
            "weight file must be a file name in the bundle",
        ),
        ("weights/diffusion/sha256", ["abc"], "sha256 must be 64 hex digits"),
        ("scheduler/schedule", "bogus", "noise schedule 'bogus'"),
        ("scheduler/prediction_type", "bogus", "prediction type 'bogus'"),
        ("scheduler/beta_end", 2.0, "betas between 0 and 1"),
        ("canvas/spacing_mm", [0, 0], "a spacing of two numbers > 0"),
        ("canvas/spacing_mm", [-2, -2], "a spacing of two numbers > 0"),
    ],
)
def test_hand_edited_settings_are_refused_before_any_run(
    tiny_bundle, tmp_path, monkeypatch, capsys, path, value, match
):
    """bundle.json is not hashed: a value no run can use is refused in one line when the bundle is read (it
    gave NaN completions, mid-run errors or tracebacks), and listing still shows the other bundles."""
    models = tmp_path / "models"
    copy_bundle(tiny_bundle, models / "good")
    broken = copy_bundle(tiny_bundle, models / "broken")
    metadata = json.loads((broken / "bundle.json").read_text())
    (broken / "bundle.json").write_text(json.dumps(_edited(metadata, path, value)))
    with pytest.raises(BundleError, match=match) as raised:
        read_metadata(broken)
    assert "\n" not in str(raised.value)
    monkeypatch.setenv(ENV_MODEL_PATH, str(models))
    monkeypatch.setenv("FOVCOMPLETION_HOME", str(tmp_path / "home"))
    assert [info.path for info in list_bundles() if info.source == "env"] == [models / "good"]
    assert main(["models", "--json"]) == 1
    rows = {row["path"]: row["status"] for row in json.loads(capsys.readouterr().out)}
    assert rows[str(models / "good")] == "ok" and rows[str(broken)].startswith("INVALID")


def test_network_arguments_torch_refuses_are_a_bundle_error(tiny_bundle, tmp_path):
    folder = copy_bundle(tiny_bundle, tmp_path / "negative")
    metadata = json.loads((folder / "bundle.json").read_text())
    channels = metadata["diffusion"]["args"]["channels"]
    metadata["diffusion"]["args"]["channels"] = [-c for c in channels]
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match="cannot build DiffusionModelUNet") as raised:
        load_bundle(folder)
    assert "\n" not in str(raised.value)


def test_an_upper_case_sha256_is_the_same_digest(tiny_bundle, tmp_path):
    folder = copy_bundle(tiny_bundle, tmp_path / "upper")
    metadata = json.loads((folder / "bundle.json").read_text())
    for weight in metadata["weights"].values():
        weight["sha256"] = weight["sha256"].upper()
    (folder / "bundle.json").write_text(json.dumps(metadata))
    verify_bundle(folder)


def test_an_unreadable_folder_on_the_search_path_is_skipped(tiny_bundle, tmp_path, monkeypatch):
    """A folder the user cannot read (here: every look inside it is refused, as without permission) must not stop
    the runs and listings of every other bundle."""
    locked = tmp_path / "locked"
    copy_bundle(tiny_bundle, locked / "inside")
    good = copy_bundle(tiny_bundle, tmp_path / "models" / "good")
    is_file, iterdir = Path.is_file, Path.iterdir

    def refused(method):
        def look(path, *args):
            if locked in (path, *path.parents):
                raise PermissionError(13, "Permission denied", str(path))
            return method(path, *args)

        return look

    monkeypatch.setattr(Path, "is_file", refused(is_file))
    monkeypatch.setattr(Path, "iterdir", refused(iterdir))
    monkeypatch.setenv(ENV_MODEL_PATH, os.pathsep.join([str(locked), str(tmp_path / "models")]))
    monkeypatch.setenv("FOVCOMPLETION_HOME", str(tmp_path / "home"))
    assert [info.path for info in list_bundles() if info.source == "env"] == [good]
    assert resolve_bundle("tiny-test") == good


def test_listing_and_estimating_never_import_torch():
    """The Slicer panel lists bundles and estimates times in its GUI process, where torch must not load."""
    import subprocess
    import sys

    code = "import sys, fovcompletion.registry, fovcompletion.estimate; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"shape": [30, 32]}, "multiples of 8"), ({"context_fraction": 1.0}, "context_fraction")],
)
def test_unusable_canvas_is_refused(tiny_bundle, tmp_path, change, match):
    folder = copy_bundle(tiny_bundle, tmp_path / "canvas")
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["canvas"].update(change)
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=match):
        read_metadata(folder)


def test_a_bundle_without_sampler_settings_keeps_the_engines_former_defaults(tiny_bundle, tmp_path):
    """Bundles written before a bundle named its steps and candidates still run as they did: 50 steps, 1 draw."""
    folder = copy_bundle(tiny_bundle, tmp_path / "older")
    metadata = json.loads((folder / "bundle.json").read_text())
    del metadata["steps"], metadata["candidates"]
    (folder / "bundle.json").write_text(json.dumps(metadata))
    older = read_metadata(folder)
    assert (older.steps, older.candidates) == (50, 1)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"steps": 0}, "steps must be between 1 and 1000"), ({"steps": 1001}, "between 1 and 1000"),
     ({"candidates": 0}, "candidates at least 1")],
)  # fmt: skip
def test_sampler_settings_a_run_cannot_use_are_refused(tiny_bundle, tmp_path, change, match):
    folder = copy_bundle(tiny_bundle, tmp_path / "settings")
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata.update(change)
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=match):
        read_metadata(folder)
