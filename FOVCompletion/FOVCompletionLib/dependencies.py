"""Python packages the engine needs inside Slicer, and how to install them without replacing torch.

torch comes from the PyTorch extension (PyTorchUtils), which picks the build for the user's GPU; everything else
is installed with pip under a constraints file that pins the installed torch, so no requirement can upgrade or
replace it. Keep REQUIREMENTS in step with pyproject.toml (a CI test compares them).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterable
from pathlib import Path

MINIMUM_TORCH_VERSION = "2.2"
REQUIREMENTS = (
    "monai>=1.4",
    "numpy>=1.24",
    "scipy>=1.10",
    "nibabel>=5.0",
    "pynrrd>=1.0",
    "safetensors>=0.4",
    "pillow>=10",
    "tqdm>=4.60",
    "einops>=0.6",
)
# In pyproject.toml but deliberately not installed into Slicer, with the reason.
NOT_NEEDED_IN_SLICER = {
    "torch": "installed by the PyTorch extension (PyTorchUtils), which picks the right CUDA build",
    "matplotlib": "only the benchmark's plots use it",
}
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


def writeTorchConstraints(path: str | Path) -> Path:
    """A pip constraints file pinning the installed torch (empty when torch is absent)."""
    path = Path(path)
    try:
        pin = f"torch=={importlib.metadata.version('torch')}\n"
    except importlib.metadata.PackageNotFoundError:
        pin = ""
    path.write_text(pin, encoding="utf-8")
    return path


def importedAmong(requirements: Iterable[str]) -> list[str]:
    """Which of these distributions are already imported (upgrading them needs a restart to take effect)."""
    from packaging.requirements import Requirement

    try:
        modules = importlib.metadata.packages_distributions()
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

    Uses `slicer.packaging.pip_ensure` where this Slicer has it (it asks, installs, and offers the restart
    itself); otherwise asks once and calls `slicer.util.pip_install`. Never asks in testing mode.
    """
    constraintsPath = writeTorchConstraints(constraintsPath)
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
