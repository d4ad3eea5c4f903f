"""Python packages the engine needs inside Slicer, and how to install them without replacing Slicer's own.

torch comes from the PyTorch extension (PyTorchUtils), which picks the build for the user's GPU; everything else,
listed in `Resources/requirements.txt` (kept in step with pyproject.toml by a CI test), is installed with pip
under a constraints file that pins the installed torch and the packages Slicer ships that our requirements reach
(numpy above all: Slicer's VTK, ITK and SimpleITK are built against its numpy), so pip cannot replace them.
Nothing is installed without asking, and nothing at all in testing mode: a self-test runs offline and must not
change the installation it tests (it skips the engine part when `missingEngineDependencies()` lists something).
"""

from __future__ import annotations

import importlib
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
    except AttributeError:  # Python < 3.10 (Slicer 5.8): each distribution's top_level.txt, below
        modules = None
    imported = []
    for text in requirements:
        name = Requirement(text).name
        if modules is None:
            topLevel = _topLevelModules(name)
        else:
            topLevel = [
                module
                for module, distributions in modules.items()
                if name.lower() in map(str.lower, distributions)
            ]
        if any(module in sys.modules for module in (topLevel or [name])):
            imported.append(name)
    return imported


def _topLevelModules(distribution: str) -> list[str]:
    """The modules a distribution installs, from its top_level.txt (Pillow installs PIL, pynrrd nrrd)."""
    try:
        text = importlib.metadata.distribution(distribution).read_text("top_level.txt") or ""
    except importlib.metadata.PackageNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


class DependencyError(RuntimeError):
    """A dependency is missing and cannot be installed here; the message says what the user should do."""


NOT_INSTALLED_IN_TESTING = (
    "{what} missing; nothing is installed in testing mode (a test must not change the installation)"
)


def torchMissing() -> str | None:
    """`torch>=MINIMUM_TORCH_VERSION` when torch is absent or too old, else None (torch is not imported)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return f"torch>={MINIMUM_TORCH_VERSION}"
    return None if torchVersionIsSufficient(version) else f"torch>={MINIMUM_TORCH_VERSION}"


def missingEngineDependencies() -> list[str]:
    """Everything the engine needs that is not installed (torch included), without importing any of it."""
    torch = torchMissing()
    return ([torch] if torch else []) + missingRequirements()


def slicerPackagingModule(name: str = "slicer.packaging"):
    """Slicer's `slicer.packaging` (5.12 and later), or None. `slicer/__init__.py` does not import it, so
    `getattr(slicer, "packaging")` finds nothing until something imports the submodule: this does."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def ensureTorch(pyTorchUtils, testing: bool) -> None:
    """torch >= MINIMUM_TORCH_VERSION through the PyTorch extension, which asks before installing.

    In testing mode nothing is installed: a missing torch raises DependencyError. A torch that is new enough is
    kept without asking the extension, whose check imports torch into Slicer's GUI process (seconds, and the
    engine, which runs in its own process, is the only user of it).
    """
    if torchMissing() is None:
        return
    if pyTorchUtils is None:
        raise DependencyError(
            "FOVCompletion needs the PyTorch extension: install 'PyTorch' from the Extensions Manager and restart."
        )
    torchLogic = pyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        if testing:
            raise DependencyError(NOT_INSTALLED_IN_TESTING.format(what="PyTorch is"))
        torch = torchLogic.installTorch(
            askConfirmation=True, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}"
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


def ensurePackages(slicerModule, constraintsPath: str | Path, testing: bool, packaging=None) -> bool:
    """Install the missing packages after asking; returns True when Slicer should restart for them to take effect.

    Slicer's own packages and torch are pinned (writeConstraints). `packaging` is `slicer.packaging` where this
    Slicer has it (slicerPackagingModule): its `pip_ensure` asks, installs and offers the restart itself;
    otherwise this asks once and calls `slicer.util.pip_install`. In testing mode nothing is installed and a
    missing package raises DependencyError.
    """
    missing = missingRequirements()
    if not missing:
        return False
    if testing:
        raise DependencyError(
            NOT_INSTALLED_IN_TESTING.format(
                what=", ".join(missing) + (" is" if len(missing) == 1 else " are")
            )
        )
    constraintsPath = writeConstraints(constraintsPath)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        try:
            packaging.pip_ensure(
                list(REQUIREMENTS),
                constraints=str(constraintsPath),
                prompt_install=True,
                prompt_restart=True,
                requester=REQUESTER,
            )
        except RuntimeError as error:  # "User declined package installation"
            raise DependencyError(
                f"the installation of the required Python packages was cancelled ({error})"
            ) from None
        return False
    if not slicerModule.util.confirmOkCancelDisplay(
        "FOVCompletion needs these Python packages, which will be downloaded and installed now:\n\n"
        + "\n".join(missing),
        f"{REQUESTER} - Install Python Packages",
    ):
        raise DependencyError("the installation of the required Python packages was cancelled")
    needsRestart = bool(importedAmong(missing))
    slicerModule.util.pip_install(list(missing) + ["-c", str(constraintsPath)])
    return needsRestart
