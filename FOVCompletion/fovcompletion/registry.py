"""Where bundles are found: bundled with the package, the user's model folder, and FOVCOMPLETION_MODEL_PATH."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .bundle import METADATA_FILE, read_metadata
from .errors import BundleError, FOVCompletionError

ENV_MODEL_PATH = "FOVCOMPLETION_MODEL_PATH"
ENV_MODELS_DIR = "FOVCOMPLETION_HOME"
DEFAULT_BUNDLE = "fovcompletion-spine-t2w-window"


@dataclass(frozen=True)
class BundleInfo:
    name: str
    path: Path
    source: str  # "bundled" | "user" | "env"
    description: str
    default_slices: int
    steps: int  # the sampler settings the model was measured best with (`BundleMetadata.steps`)
    candidates: int


def bundled_models_dir() -> Path:
    """`Resources/Models` next to the package in the source tree and in Slicer; package data when pip-installed."""
    beside = Path(__file__).resolve().parent.parent / "Resources" / "Models"
    if beside.is_dir():
        return beside
    try:
        from . import bundled_models

        return Path(bundled_models.__path__[0])
    except ImportError:
        return beside


def user_models_dir() -> Path:
    """The user's own bundles (`fovcompletion import-checkpoint` and Slicer's "add a bundle" write here)."""
    root = os.environ.get(ENV_MODELS_DIR)
    if root:
        return Path(root) / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fovcompletion" / "models"


def _candidate_folders() -> list[tuple[Path, str]]:
    folders = [(bundled_models_dir(), "bundled"), (user_models_dir(), "user")]
    for entry in os.environ.get(ENV_MODEL_PATH, "").split(os.pathsep):
        if entry:
            folders.append((Path(entry), "env"))
    return folders


def _bundle_folders(root: Path) -> list[Path]:
    """The bundles in one search folder; a folder or bundle that cannot be read is left out (a user's unreadable
    folder on the search path must not stop runs of every other bundle)."""
    try:
        if (root / METADATA_FILE).is_file():
            return [root]
        if not root.is_dir():
            return []
        children = sorted(root.iterdir())
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if (child / METADATA_FILE).is_file():
                found.append(child)
        except OSError:
            continue
    return found


def list_bundles() -> list[BundleInfo]:
    """Every readable bundle, in search order; unreadable ones are skipped (`fovcompletion models` reports them)."""
    found = []
    for root, source in _candidate_folders():
        for folder in _bundle_folders(root):
            try:
                metadata = read_metadata(folder)
            except FOVCompletionError:
                continue
            found.append(
                BundleInfo(
                    metadata.name,
                    folder,
                    source,
                    metadata.description,
                    metadata.default_slices,
                    metadata.steps,
                    metadata.candidates,
                )
            )
    return found


def bundle_folders_with_source() -> list[tuple[Path, str]]:
    """All folders that look like bundles, readable or not (for verification listings)."""
    return [(folder, source) for root, source in _candidate_folders() for folder in _bundle_folders(root)]


def default_bundle_name() -> str:
    return DEFAULT_BUNDLE


def resolve_bundle(name_or_path: str | None) -> Path:
    """A bundle folder from a path, or from a name searched in bundled, user and environment folders."""
    if not name_or_path:
        name_or_path = default_bundle_name()
    candidate = Path(name_or_path).expanduser()
    # A path: anything that names a folder by its location, or a bundle folder here. A folder in the working
    # directory that merely has a bundle's name (and no bundle.json) does not hide the registered bundle.
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    try:
        names_a_path = any(sep in name_or_path for sep in separators) or (candidate / METADATA_FILE).is_file()
        if candidate.exists() and names_a_path:
            return candidate
    except OSError:  # a folder here that cannot be read is not a bundle given by its path
        pass
    for info in list_bundles():
        if name_or_path in (info.name, info.path.name):
            return info.path
    for folder, _ in bundle_folders_with_source():
        if folder.name == name_or_path:  # there, but unreadable: say why rather than "not found"
            read_metadata(folder)
    known = ", ".join(sorted({info.name for info in list_bundles()})) or "none"
    raise BundleError(f"no model bundle named or at {name_or_path!r} (known bundles: {known})")
