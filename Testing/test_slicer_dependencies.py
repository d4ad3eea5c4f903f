"""Dependencies inside Slicer: the list matches pyproject, torch and Slicer's numpy are never replaced, nothing is
installed without asking and nothing at all in testing mode."""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

try:
    import tomllib  # novermin (3.11+, with the fallback below)
except ImportError:  # Python < 3.11: pytest depends on tomli there
    import tomli as tomllib
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from FOVCompletionLib import dependencies
from FOVCompletionLib.dependencies import (
    MINIMUM_TORCH_VERSION,
    NOT_NEEDED_IN_SLICER,
    REQUIREMENTS,
    REQUIREMENTS_FILE,
    SLICER_PACKAGES,
    DependencyError,
    constraintPins,
    ensurePackages,
    ensureTorch,
    importedAmong,
    loadRequirements,
    missingRequirements,
    torchVersionIsSufficient,
    writeConstraints,
)

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_come_from_the_module_resources(tmp_path):
    assert REQUIREMENTS_FILE == ROOT / "FOVCompletion" / "Resources" / "requirements.txt"
    assert tuple(loadRequirements()) == REQUIREMENTS and "monai>=1.5" in REQUIREMENTS
    sample = tmp_path / "requirements.txt"
    sample.write_text("# comment\n\n  numpy>=1.24  \n-c constraints.txt\n--index-url https://x\nscipy\n")
    # as slicer.packaging.load_requirements reads it
    assert loadRequirements(sample) == ["numpy>=1.24", "scipy"]


def test_requirements_follow_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {Requirement(text).name: str(Requirement(text).specifier) for text in project}
    ours = {Requirement(text).name: str(Requirement(text).specifier) for text in REQUIREMENTS}
    assert "torch" not in ours  # torch only ever comes from the PyTorch extension
    for name, specifier in expected.items():
        if name in NOT_NEEDED_IN_SLICER:
            continue
        assert ours.get(name) == specifier, (
            f"{name}{specifier} is in pyproject.toml but not in FOVCompletion/Resources/requirements.txt"
        )
    assert set(ours) <= set(expected), "requirements.txt installs a package pyproject.toml does not declare"
    assert (
        str(Requirement(next(t for t in project if t.startswith("torch"))).specifier)[2:]
        == MINIMUM_TORCH_VERSION
    )


def test_missing_requirements():
    installed = importlib.metadata.version("numpy")
    assert missingRequirements([f"numpy>={installed}"]) == []
    assert missingRequirements([f"numpy>{installed}"]) == [f"numpy>{installed}"]
    assert missingRequirements(["surely-not-installed-fovc>=1"]) == ["surely-not-installed-fovc>=1"]


def test_torch_version_check():
    assert torchVersionIsSufficient("2.13.0+cpu")
    assert torchVersionIsSufficient("2.2.0")
    assert not torchVersionIsSufficient("2.1.2+cu121")


def installed_pins() -> set[str]:
    pins = set()
    for name in SLICER_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.add(f"{name}=={importlib.metadata.version(name)}")
    return pins


def test_constraints_pin_torch_and_slicers_numpy(tmp_path):
    text = writeConstraints(tmp_path / "c.txt").read_text()
    pins = text.splitlines()
    assert f"torch=={importlib.metadata.version('torch')}" in pins
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins  # VTK/ITK in Slicer are built against it
    assert set(pins) == installed_pins()
    for pin in pins:
        Requirement(pin)  # valid pip syntax


def test_a_too_old_slicer_package_is_upgraded_but_numpy_never(monkeypatch):
    versions = {
        "numpy": "1.26.4",
        "scipy": "1.9.0",
        "pillow": "10.4.0",
        "packaging": "24.1",
        "torch": "2.5.1",
    }

    def version(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    pins = constraintPins(["numpy>=1.24", "scipy>=1.10", "pillow>=10"])
    assert pins == ["torch==2.5.1", "numpy==1.26.4", "pillow==10.4.0", "packaging==24.1"]  # scipy may move
    versions["numpy"] = "1.21.0"
    with pytest.raises(DependencyError, match="numpy>=1.24 but this Slicer has numpy 1.21.0"):
        constraintPins(["numpy>=1.24"])
    del versions["numpy"], versions["torch"]
    assert constraintPins(["monai>=1.4"]) == ["scipy==1.9.0", "pillow==10.4.0", "packaging==24.1"]


def test_imported_packages_need_a_restart():
    assert importedAmong(["numpy>=1", "surely-not-installed-fovc"]) == ["numpy"]


def test_imported_packages_are_found_by_their_modules_on_python_39(monkeypatch):
    """Python 3.9 (Slicer 5.8) has no packages_distributions: Pillow, imported as PIL, and pynrrd, as nrrd, must
    still be seen as imported (their upgrade needs a restart)."""
    import importlib.metadata

    import nrrd  # noqa: F401
    import PIL  # noqa: F401

    monkeypatch.delattr(importlib.metadata, "packages_distributions", raising=False)  # absent on 3.9 itself
    assert importedAmong(["pillow>=9", "pynrrd", "numpy", "surely-not-installed-fovc"]) == [
        "pillow",
        "pynrrd",
        "numpy",
    ]


class FakeSlicer:
    """Records what the dependency code asks of Slicer (and of `slicer.packaging`, passed separately)."""

    def __init__(self, with_pip_ensure: bool, confirm: bool = True, declineEnsure: bool = False):
        self.calls = []
        self.util = SimpleNamespace(
            confirmOkCancelDisplay=lambda *a, **k: self.calls.append(("confirm", a)) or confirm,
            pip_install=lambda args: self.calls.append(("pip_install", args)),
        )
        self.packaging = None
        if with_pip_ensure:

            def pip_ensure(reqs, **kw):
                self.calls.append(("pip_ensure", reqs, kw))
                if declineEnsure:
                    raise RuntimeError("User declined package installation")

            self.packaging = SimpleNamespace(pip_ensure=pip_ensure)


@pytest.fixture()
def monai_missing(monkeypatch):
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: ["numpy>=1.24", "monai>=1.4"])


def test_pip_ensure_asks_and_gets_the_torch_pin(tmp_path, monai_missing):
    fake = FakeSlicer(with_pip_ensure=True)
    assert ensurePackages(fake, tmp_path / "c.txt", testing=False, packaging=fake.packaging) is False
    [(kind, requirements, options)] = fake.calls
    assert kind == "pip_ensure" and requirements == list(REQUIREMENTS)
    assert set(Path(options["constraints"]).read_text().splitlines()) == installed_pins()
    assert options["prompt_install"] is True and options["prompt_restart"] is True
    assert options["requester"] == "FOVCompletion"

    declined = FakeSlicer(with_pip_ensure=True, declineEnsure=True)
    with pytest.raises(DependencyError, match="cancelled"):
        ensurePackages(declined, tmp_path / "c.txt", testing=False, packaging=declined.packaging)


@pytest.mark.parametrize("with_pip_ensure", [True, False])
def test_testing_mode_installs_nothing(tmp_path, monai_missing, with_pip_ensure):
    """A self-test runs offline and must not change the Slicer it tests: a missing package is an error."""
    fake = FakeSlicer(with_pip_ensure=with_pip_ensure)
    with pytest.raises(DependencyError, match="numpy>=1.24, monai>=1.4 are missing; nothing is installed"):
        ensurePackages(fake, tmp_path / "c.txt", testing=True, packaging=fake.packaging)
    assert fake.calls == [] and not (tmp_path / "c.txt").exists()


def test_older_slicer_asks_once_then_pip_installs_with_constraints(tmp_path, monai_missing):
    fake = FakeSlicer(with_pip_ensure=False)
    restart = ensurePackages(fake, tmp_path / "c.txt", testing=False)
    assert [call[0] for call in fake.calls] == ["confirm", "pip_install"]
    args = fake.calls[1][1]
    assert args[:2] == ["numpy>=1.24", "monai>=1.4"] and args[2] == "-c"
    assert set(Path(args[3]).read_text().splitlines()) == installed_pins()
    assert restart is True  # numpy is already imported in this process

    declined = FakeSlicer(with_pip_ensure=False, confirm=False)
    with pytest.raises(DependencyError, match="cancelled"):
        ensurePackages(declined, tmp_path / "c.txt", testing=False)
    assert [call[0] for call in declined.calls] == ["confirm"]


def test_nothing_missing_installs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: [])
    for testing in (True, False):
        fake = FakeSlicer(with_pip_ensure=True)
        assert ensurePackages(fake, tmp_path / "c.txt", testing=testing, packaging=fake.packaging) is False
        assert fake.calls == []


def test_slicer_packaging_is_imported_not_looked_up(tmp_path, monkeypatch):
    """Slicer 5.12's `slicer/__init__.py` does not import `slicer.packaging`: an attribute lookup finds nothing,
    importing the submodule finds pip_ensure. A package laid out the same way stands in for Slicer's."""
    package = tmp_path / "slicerlike"
    package.mkdir()
    (package / "__init__.py").write_text("")  # like slicer/__init__.py: the submodule is not imported
    (package / "packaging.py").write_text("def pip_ensure(requirements, **options):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import slicerlike

    assert getattr(slicerlike, "packaging", None) is None  # what the module used to rely on
    module = dependencies.slicerPackagingModule("slicerlike.packaging")
    assert module is not None and callable(module.pip_ensure)
    assert dependencies.slicerPackagingModule("slicerlike.nothing_here") is None
    assert dependencies.slicerPackagingModule("surely_not_a_package_fovc.packaging") is None


def test_missing_engine_dependencies_are_listed_without_importing_them(monkeypatch):
    assert dependencies.missingEngineDependencies() == []  # this environment has the engine's packages
    real = importlib.metadata.version

    def version(name):
        if name in ("torch", "monai"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    missing = dependencies.missingEngineDependencies()
    assert missing[0] == f"torch>={MINIMUM_TORCH_VERSION}" and "monai>=1.5" in missing


def fake_pytorch_utils(installed: bool, installs: bool = True):
    calls = []

    class Logic:
        def torchInstalled(self):
            return installed

        def installTorch(self, **kwargs):
            calls.append(kwargs)
            return object() if installs else None

    return SimpleNamespace(PyTorchUtilsLogic=Logic), calls


def without_torch(monkeypatch) -> None:
    """importlib.metadata as if torch were not installed (the GUI process reads versions, never imports)."""
    real = importlib.metadata.version

    def version(name):
        if name == "torch":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_a_torch_new_enough_is_kept_without_the_extension_importing_it():
    """PyTorchUtils' torchInstalled() imports torch into Slicer's GUI process; with torch >= the minimum
    installed (as here) neither the extension nor its check is needed."""
    ensureTorch(None, testing=False)  # no PyTorch extension: fine, torch is there

    class ImportsTorch:
        def torchInstalled(self):
            raise AssertionError("the extension was asked, and would have imported torch")

    ensureTorch(SimpleNamespace(PyTorchUtilsLogic=ImportsTorch), testing=True)


def test_torch_comes_from_the_pytorch_extension(monkeypatch):
    without_torch(monkeypatch)
    with pytest.raises(DependencyError, match="PyTorch extension"):
        ensureTorch(None, testing=False)
    module, calls = fake_pytorch_utils(installed=False)
    with pytest.raises(DependencyError, match="PyTorch is missing; nothing is installed in testing mode"):
        ensureTorch(module, testing=True)
    assert calls == []
    module, calls = fake_pytorch_utils(installed=False)
    ensureTorch(module, testing=False)
    assert calls == [{"askConfirmation": True, "torchVersionRequirement": f">={MINIMUM_TORCH_VERSION}"}]
    module, _ = fake_pytorch_utils(installed=False, installs=False)
    with pytest.raises(DependencyError, match="not installed"):
        ensureTorch(module, testing=False)


def test_a_torch_too_old_is_reported_with_what_to_do(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "1.13.1" if name == "torch" else real(name)
    )
    module, calls = fake_pytorch_utils(installed=True)
    with pytest.raises(DependencyError, match=r"PyTorch 1\.13\.1 is too old .*PyTorch Utils"):
        ensureTorch(module, testing=False)
    assert calls == []
