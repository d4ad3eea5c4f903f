"""Python packages the engine needs inside Slicer, and how to install them without replacing Slicer's own.

torch comes from the PyTorch extension (PyTorchUtils), which picks the build for the user's GPU; everything else,
listed in `Resources/requirements.txt` (kept in step with pyproject.toml by a CI test), is installed with pip
under a constraints file that pins the installed torch and the packages Slicer ships that our requirements reach
(numpy above all: Slicer's VTK, ITK and SimpleITK are built against its numpy), so pip cannot replace them.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterable
from pathlib import Path

MINIMUM_TORCH_VERSION = "2.2"
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"


def loadRequirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirements of a requirements file, read as `slicer.packaging.load_requirements` reads them:
    comments, blank lines and pip options (lines starting with '-') are skipped."""
    lines = (line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


REQUIREMENTS = tuple(loadRequirements())
# In pyproject.toml but deliberately not installed into Slicer, with the reason.
NOT_NEEDED_IN_SLICER = {
    "torch": "installed by the PyTorch extension (PyTorchUtils), which picks the right CUDA build",
    "matplotlib": "only the benchmark's plots use it",
}
# Installed with Slicer (or by the PyTorch extension) and reachable from our requirements: pinned at their installed
# version while pip installs ours, unless our requirements exclude that version (then pip may upgrade it).
# NEVER_REPLACED ones are not upgraded even then: Slicer's libraries, or the PyTorch extension, depend on them.
SLICER_PACKAGES = ("torch", "numpy", "scipy", "pillow", "packaging")
NEVER_REPLACED = ("torch", "numpy")
REQUESTER = "FOVCompletion"


def missingRequirements(requirements: Iterable[str] = REQUIREMENTS) -> list[str]:
    """The requirements whose distribution is absent or at a version outside the specifier."""
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def torchVersionIsSufficient(version: str, minimum: str = MINIMUM_TORCH_VERSION) -> bool:
    from packaging.version import Version

    return Version(Version(version).base_version) >= Version(minimum)


def constraintPins(requirements: Iterable[str] = REQUIREMENTS) -> list[str]:
    """`name==version` for each installed SLICER_PACKAGES entry that pip must leave alone.

    A package whose installed version our requirements exclude is left free to be upgraded, except those in
    NEVER_REPLACED: then the installation cannot work in this Slicer and DependencyError says so.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    specifiers = {canonicalize_name(r.name): r.specifier for r in map(Requirement, requirements)}
    pins = []
    for name in SLICER_PACKAGES:
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        specifier = specifiers.get(canonicalize_name(name))
        if specifier and not specifier.contains(installed, prereleases=True):
            if name in NEVER_REPLACED:
                raise DependencyError(
                    f"FOVCompletion needs {name}{specifier} but this Slicer has {name} {installed}, which must not "
                    "be replaced (Slicer's own libraries are built against it). Use a more recent Slicer."
                )
            continue
        pins.append(f"{name}=={installed}")
    return pins


def writeConstraints(path: str | Path, requirements: Iterable[str] = REQUIREMENTS) -> Path:
    """A pip constraints file with `constraintPins` (empty when none of those packages is installed)."""
    path = Path(path)
    path.write_text("".join(pin + "\n" for pin in constraintPins(requirements)), encoding="utf-8")
    return path


def importedAmong(requirements: Iterable[str]) -> list[str]:
    """Which of these distributions are already imported (upgrading them needs a restart to take effect)."""
    from packaging.requirements import Requirement

    try:
        modules = importlib.metadata.packages_distributions()  # novermin (guarded: 3.10+)
    except AttributeError:  # Python < 3.10
        modules = {}
    imported = []
    for text in requirements:
        name = Requirement(text).name
        topLevel = [
            module
            for module, distributions in modules.items()
            if name.lower() in map(str.lower, distributions)
        ]
        if any(module in sys.modules for module in (topLevel or [name])):
            imported.append(name)
    return imported


class DependencyError(RuntimeError):
    """A dependency is missing and cannot be installed here; the message says what the user should do."""


def ensureTorch(pyTorchUtils, testing: bool) -> None:
    """torch >= MINIMUM_TORCH_VERSION through the PyTorch extension (asks first, except in testing mode)."""
    if pyTorchUtils is None:
        raise DependencyError(
            "FOVCompletion needs the PyTorch extension: install 'PyTorch' from the Extensions Manager and restart."
        )
    torchLogic = pyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(
            askConfirmation=not testing, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}"
        )
        if torch is None:
            raise DependencyError("PyTorch was not installed; FOVCompletion cannot run without it.")
        return
    version = importlib.metadata.version("torch")
    if not torchVersionIsSufficient(version):
        raise DependencyError(
            f"PyTorch {version} is too old for FOVCompletion (needs >= {MINIMUM_TORCH_VERSION}). Open the "
            f"'PyTorch Utils' module, set the version requirement to >={MINIMUM_TORCH_VERSION}, reinstall, restart."
        )


def ensurePackages(slicerModule, constraintsPath: str | Path, testing: bool) -> bool:
    """Install the missing packages; returns True when Slicer should restart for them to take effect.

    Slicer's own packages and torch are pinned (writeConstraints). Uses `slicer.packaging.pip_ensure` where this Slicer has it (it asks, installs, and offers the restart
    itself); otherwise asks once and calls `slicer.util.pip_install`. Never asks in testing mode.
    """
    constraintsPath = writeConstraints(constraintsPath)
    packaging = getattr(slicerModule, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(
            list(REQUIREMENTS),
            constraints=str(constraintsPath),
            prompt_install=not testing,
            prompt_restart=not testing,
            requester=REQUESTER,
            skip_in_testing=False,
        )
        return False
    missing = missingRequirements()
    if not missing:
        return False
    if not testing and not slicerModule.util.confirmOkCancelDisplay(
        "FOVCompletion needs these Python packages, which will be downloaded and installed now:\n\n"
        + "\n".join(missing),
        f"{REQUESTER} - Install Python Packages",
    ):
        raise DependencyError("the installation of the required Python packages was cancelled")
    needsRestart = bool(importedAmong(missing))
    slicerModule.util.pip_install(list(missing) + ["-c", str(constraintsPath)])
    return needsRestart
