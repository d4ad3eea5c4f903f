"""Model choices for the panel: bundled, user and environment bundles, adding a bundle, and time estimates.

The engine's registry is the source of truth. Nothing here imports torch: the panel runs in Slicer's GUI process,
where importing torch is slow and may not even be possible before the dependencies are installed; the engine
checks the device when it runs. Every function degrades gracefully when the engine cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .background_process import childProcessOptions
from .engine_command import MODULE_DIR, buildBundleCheckCommand, engineEnvironment

BUNDLED_MODELS_DIR = MODULE_DIR / "Resources" / "Models"
BUNDLE_METADATA_FILE = "bundle.json"
FALLBACK_DEFAULT_MODEL = "fovcompletion-spine-t2w-window"
# `models --check` imports torch and loads the networks: seconds for a bundle of the extension's 50 MB; a
# check that takes minutes has hung (the GUI waits for it).
BUNDLE_CHECK_TIMEOUT_S = 120


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model combo box; `value` is what the engine's --model accepts (a name or a folder)."""

    label: str
    value: str
    description: str = ""
    defaultSlices: int | None = None
    defaultSteps: int | None = None  # the sampler settings the model was measured best with (None: unknown)
    defaultCandidates: int | None = None


def defaultModelName() -> str:
    try:
        from fovcompletion.registry import default_bundle_name
    except ImportError:
        return FALLBACK_DEFAULT_MODEL
    return default_bundle_name()


def _bundledFolders() -> list[ModelChoice]:
    """Without the engine: the bundled folders, by name (the engine resolves a name to its folder)."""
    if not BUNDLED_MODELS_DIR.is_dir():
        return []
    choices = []
    for folder in sorted(BUNDLED_MODELS_DIR.iterdir()):
        metadataFile = folder / BUNDLE_METADATA_FILE
        if not metadataFile.is_file():
            continue
        try:
            metadata = json.loads(metadataFile.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        name = str(metadata.get("name") or folder.name)
        steps, candidates = metadata.get("steps"), metadata.get("candidates")
        choices.append(
            ModelChoice(
                f"{name} (bundled)",
                name,
                str(metadata.get("description", "")),
                defaultSteps=steps if isinstance(steps, int) else None,
                defaultCandidates=candidates if isinstance(candidates, int) else None,
            )
        )
    return choices


def availableModels() -> list[ModelChoice]:
    """Every usable bundle, default first; names that occur twice are given as folders so each is reachable."""
    try:
        from fovcompletion.registry import list_bundles
    except ImportError:
        return _bundledFolders()
    bundles = list_bundles()
    choices = []
    for info, value in zip(bundles, _listedValues(bundles)):
        label = f"{info.name} ({info.source})"
        choices.append(
            ModelChoice(label, value, info.description, info.default_slices, info.steps, info.candidates)
        )
    default = defaultModelName()
    choices.sort(key=lambda choice: choice.value != default)
    return choices


def _listedValues(bundles: list) -> list[str]:
    """What the model list selects each bundle by: its name, or its folder where two bundles share a name."""
    counts: dict[str, int] = {}
    for info in bundles:
        counts[info.name] = counts.get(info.name, 0) + 1
    return [info.name if counts[info.name] == 1 else str(info.path) for info in bundles]


def _listedValue(folder: Path, name: str) -> str:
    """The model-list value of the bundle in `folder`, so that adding a bundle whose name another already has
    selects the one just added, not the first of that name."""
    from fovcompletion.registry import list_bundles

    bundles = list_bundles()
    for info, value in zip(bundles, _listedValues(bundles)):
        if info.path.resolve() == folder.resolve():
            return value
    return name


def checkBundleInEngine(
    folder: str | os.PathLike,
    pythonExecutable: str | os.PathLike,
    environment: Mapping[str, str] | None = None,
) -> None:
    """Load the bundle's networks with its weights in the engine's own process (`fovcompletion models --check`),
    so that weights that do not fit their architecture are refused when the bundle is added, not at its first
    run. `environment`: the child's base environment, as for a completion (Slicer's startup environment).
    Raises the engine's BundleError with the engine's one line."""
    from fovcompletion.errors import BundleError

    try:
        finished = subprocess.run(
            buildBundleCheckCommand(pythonExecutable, folder),
            env=engineEnvironment(environment),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=BUNDLE_CHECK_TIMEOUT_S,
            **childProcessOptions(),  # no console window flashing up on Windows
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BundleError(f"the engine could not check the bundle: {error}") from None
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.splitlines() if line.strip()]
        if not lines:
            raise BundleError(f"the engine's check of the bundle failed with exit code {finished.returncode}")
        raise BundleError(lines[-1].removeprefix("fovcompletion: error: "))


def addBundleFromFolder(
    folder: str | os.PathLike,
    modelsDir: str | os.PathLike | None = None,
    pythonExecutable: str | os.PathLike | None = None,
    environment: Mapping[str, str] | None = None,
) -> str:
    """Verify a bundle folder and copy it into the user's model folder: its metadata and every weight file's
    sha256 here, and with `pythonExecutable` (the panel passes Slicer's, and Slicer's startup `environment`) its
    weights loaded into their networks by the engine in a process of its own (`checkBundleInEngine`; torch stays
    out of Slicer's GUI process).

    Returns the model-list value to select: the bundle's name, or its new folder when another bundle has the same
    name (`availableModels` lists those by folder). Raises the engine's BundleError (one clear line) for a bad bundle and
    FileExistsError rather than overwrite a different bundle of the same name; nothing is copied then.
    """
    from fovcompletion.bundle import verify_bundle
    from fovcompletion.registry import user_models_dir

    source = Path(folder)
    metadata = verify_bundle(source)
    target = Path(modelsDir) if modelsDir is not None else user_models_dir()
    destination = target / source.name
    if destination.resolve() == source.resolve():
        return _listedValue(destination, metadata.name)
    if destination.exists():
        raise FileExistsError(f"a bundle folder named {source.name!r} already exists in {target}")
    if pythonExecutable is not None:
        checkBundleInEngine(source, pythonExecutable, environment)
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".{source.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _listedValue(destination, metadata.name)


def modelAfterAddingBundle(
    folder: str | os.PathLike,
    currentModel: str,
    modelsDir: str | os.PathLike | None = None,
    pythonExecutable: str | os.PathLike | None = None,
    environment: Mapping[str, str] | None = None,
) -> tuple[str, Exception | None]:
    """ "Add a bundle from a folder...": (the model to select, the error or None).

    Never raises: on success the new bundle's name, on any failure the model selected before, so that the panel
    always repopulates its list and shows a real model again instead of staying on the "Add..." entry.
    """
    try:
        return addBundleFromFolder(folder, modelsDir, pythonExecutable, environment), None
    except Exception as error:
        return currentModel, error


def _bundlePath(model: str | None) -> Path:
    from fovcompletion.registry import resolve_bundle

    return resolve_bundle(model or None)


def _autoDevice() -> str:
    """What "auto" will likely pick, asking torch only if something already imported it (never importing it)."""
    torch = sys.modules.get("torch")
    try:
        return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    except (AttributeError, RuntimeError):  # a half-initialised torch: the estimate is only a hint
        return "cpu"


def missingDefaultModelMessage() -> str | None:
    """None when the default bundle can be found, else one sentence saying what is missing and where."""
    name = defaultModelName()
    try:
        from fovcompletion.errors import FOVCompletionError
    except ImportError:
        found = any(choice.value == name for choice in _bundledFolders())
    else:
        try:
            found = _bundlePath(None).is_dir()
        except (FOVCompletionError, OSError):
            found = False
    if found:
        return None
    return (
        f"The default model bundle {name!r} is not installed: expected a folder {name}/ with bundle.json and its "
        f"weights in {BUNDLED_MODELS_DIR} (the module's Resources/Models), in the user model folder, or in "
        "FOVCOMPLETION_MODEL_PATH."
    )


def estimateSeconds(
    model: str | None,
    slices: int,
    steps: int,
    extendSuperiorMm: float,
    extendInferiorMm: float,
    inputHeightMm: float,
    device: str = "auto",
    samples: int = 1,
    candidates: int = 1,
) -> float | None:
    """The engine's estimate for this run, or None when it cannot be made (no engine yet, unknown model...)."""
    try:
        from fovcompletion.errors import FOVCompletionError
        from fovcompletion.estimate import estimate_seconds
    except ImportError:
        return None
    if device == "auto":
        device = _autoDevice()
    try:
        return float(
            estimate_seconds(
                _bundlePath(model),
                slices,
                steps,
                extendSuperiorMm,
                extendInferiorMm,
                inputHeightMm,
                device,
                samples=samples,
                candidates=candidates,
            )
        )
    except (FOVCompletionError, OSError, ValueError, KeyError):
        return None
