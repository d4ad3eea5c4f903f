"""Model choices, adding a bundle from a folder, and the time estimate next to the steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from fovcompletion import registry
from fovcompletion.errors import BundleError
from fovcompletion.registry import ENV_MODEL_PATH, ENV_MODELS_DIR, default_bundle_name, resolve_bundle
from FOVCompletionLib import models
from FOVCompletionLib.models import (
    addBundleFromFolder,
    availableModels,
    estimateSeconds,
    missingDefaultModelMessage,
    modelAfterAddingBundle,
)

MODULE_FOLDER = Path(__file__).resolve().parents[1] / "FOVCompletion"


@pytest.fixture()
def user_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(ENV_MODELS_DIR, str(tmp_path / "home"))
    monkeypatch.delenv(ENV_MODEL_PATH, raising=False)
    return tmp_path / "home" / "models"


def test_environment_bundle_is_offered(tiny_bundle, user_home, monkeypatch):
    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny_bundle))
    choices = availableModels()
    tiny = [c for c in choices if c.value == "tiny-test"]
    assert len(tiny) == 1 and tiny[0].label == "tiny-test (env)" and tiny[0].defaultSlices >= 1
    assert (tiny[0].defaultSteps, tiny[0].defaultCandidates) == (50, 1)  # what its bundle.json says


def test_add_bundle_from_folder(tiny_bundle, user_home):
    name = addBundleFromFolder(tiny_bundle)
    assert name == "tiny-test"
    assert (user_home / tiny_bundle.name / "bundle.json").is_file()
    assert [c.label for c in availableModels() if c.value == "tiny-test"] == ["tiny-test (user)"]
    with pytest.raises(FileExistsError):
        addBundleFromFolder(tiny_bundle)


def test_after_adding_a_bundle_the_panel_shows_a_real_model(tiny_bundle, user_home, tmp_path):
    """Issue 15, item 5: whatever happens, the panel gets a model to show (never the "Add..." entry) and the error."""
    model, error = modelAfterAddingBundle(tiny_bundle, "")
    assert (model, error) == ("tiny-test", None)
    assert "tiny-test" in [c.value for c in availableModels()]  # the repopulated list offers it

    not_a_bundle = tmp_path / "holiday-photos"
    not_a_bundle.mkdir()
    model, error = modelAfterAddingBundle(not_a_bundle, "tiny-test")
    assert model == "tiny-test" and isinstance(error, BundleError) and "\n" not in str(error)
    model, error = modelAfterAddingBundle(
        tiny_bundle, "tiny-test"
    )  # a second copy under the same folder name
    assert model == "tiny-test" and isinstance(error, FileExistsError)
    assert model in [c.value for c in availableModels()]


def test_a_tampered_bundle_is_refused_and_not_copied(tiny_bundle, user_home, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, copy)
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError):
        addBundleFromFolder(copy)
    assert not (user_home / "tampered").exists()


def test_weights_that_do_not_fit_are_refused_by_the_engine_process_and_not_copied(
    tiny_bundle, user_home, tmp_path
):
    """The GUI process hashes the weights; the engine, started as the panel starts it, loads them. A bundle.json
    whose architecture its weights do not fit passes the first and must fail the second before anything is
    copied, so the bundle is not listed as usable until its first run fails."""
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_bundle, mismatched)
    metadata = json.loads((mismatched / "bundle.json").read_text())
    metadata["autoencoder"]["args"]["num_embeddings"] += 1
    (mismatched / "bundle.json").write_text(json.dumps(metadata))
    model, error = modelAfterAddingBundle(mismatched, "tiny-test", pythonExecutable=sys.executable)
    assert model == "tiny-test" and isinstance(error, BundleError)
    assert str(error).startswith("autoencoder weights do not match the bundle's architecture")
    assert "\n" not in str(error)
    assert not (user_home / "mismatched").exists() and not list(user_home.parent.rglob("*.partial"))
    good = addBundleFromFolder(tiny_bundle, pythonExecutable=sys.executable)
    assert good == "tiny-test" and (user_home / tiny_bundle.name / "bundle.json").is_file()


def test_duplicate_names_are_offered_by_folder(tiny_bundle, user_home, monkeypatch):
    addBundleFromFolder(tiny_bundle)
    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny_bundle))
    values = [c.value for c in availableModels() if "tiny-test" in c.label]
    assert len(values) == 2 and all(Path(v).is_dir() for v in values)


def test_adding_a_bundle_whose_name_another_has_selects_the_one_added(
    tiny_bundle, user_home, tmp_path, monkeypatch
):
    """A fine-tuned bundle that kept its parent's name is listed by folder; adding it must select it, not the
    first bundle of that name (which the name alone would resolve to)."""
    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny_bundle))
    fine_tuned = tmp_path / "tiny-fine-tuned"
    shutil.copytree(tiny_bundle, fine_tuned)
    model, error = modelAfterAddingBundle(fine_tuned, "tiny-test")
    assert error is None and Path(model) == user_home / "tiny-fine-tuned"
    assert model in [c.value for c in availableModels()]
    assert resolve_bundle(model) == user_home / "tiny-fine-tuned"  # what the run will load


def test_estimate(tiny_bundle):
    seconds = estimateSeconds(str(tiny_bundle), 3, 50, 0.0, 100.0, 200.0, "cpu")
    assert seconds is not None and seconds > 0
    assert estimateSeconds(str(tiny_bundle), 3, 100, 0.0, 100.0, 200.0, "cpu") > seconds
    assert estimateSeconds("no-such-model", 3, 50, 0.0, 100.0, 200.0, "cpu") is None
    assert estimateSeconds(str(tiny_bundle), 3, 50, 0.0, 0.0, 200.0, "auto") == 0.0


def test_without_the_engine_the_bundled_folders_are_listed(tmp_path, monkeypatch):
    folder = tmp_path / "Models" / "some-bundle"
    folder.mkdir(parents=True)
    metadata = {"name": "some-model", "description": "d", "steps": 25, "candidates": 3}
    (folder / "bundle.json").write_text(json.dumps(metadata))
    (tmp_path / "Models" / "not-a-bundle").mkdir()
    monkeypatch.setattr(models, "BUNDLED_MODELS_DIR", tmp_path / "Models")
    choices = models._bundledFolders()
    assert [(c.label, c.value) for c in choices] == [("some-model (bundled)", "some-model")]
    assert (choices[0].defaultSteps, choices[0].defaultCandidates) == (25, 3)  # choosing it sets them
    assert models.defaultModelName() == default_bundle_name()


def test_auto_device_never_imports_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert models._autoDevice() == "cpu"
    assert "torch" not in sys.modules
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)  # already imported by something else: ask it
    assert models._autoDevice() == "cuda"


def test_missing_default_model_is_explained(tiny_bundle, user_home, monkeypatch):
    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny_bundle))
    monkeypatch.setattr(registry, "DEFAULT_BUNDLE", "tiny-test")
    assert missingDefaultModelMessage() is None
    monkeypatch.setattr(registry, "DEFAULT_BUNDLE", "fovcompletion-no-such-bundle")
    message = missingDefaultModelMessage()
    assert "'fovcompletion-no-such-bundle' is not installed" in message
    assert str(models.BUNDLED_MODELS_DIR) in message and "Resources/Models" in message


def test_the_panel_does_not_import_torch(tiny_bundle, tmp_path):
    """Opening the panel (importing the helpers, listing models, estimating the time) keeps torch out of Slicer's
    GUI process; checked in a fresh interpreter, since this one has imported torch long ago."""
    pytest.importorskip("slicer", reason="slicer-core has no wheel for this Python (3.9)")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(MODULE_FOLDER)!r})
        from FOVCompletionLib import (
            background_process, choices, completion_task, dependencies, display, engine_command, known_region,
            models, panel, presets, progress_events, sample_data, self_test, view_fit, volume_files,
            volume_geometry,
        )
        values = [choice.value for choice in models.availableModels()]
        assert "tiny-test" in values, values
        seconds = models.estimateSeconds("tiny-test", 3, 50, 0.0, 100.0, 200.0, "auto")
        assert seconds is not None and seconds > 0, seconds
        models.missingDefaultModelMessage()
        print(sorted(name for name in sys.modules if name.split(".")[0] == "torch"))
        """
    )
    environment = dict(os.environ, **{ENV_MODEL_PATH: str(tiny_bundle), ENV_MODELS_DIR: str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", "torch was imported"
