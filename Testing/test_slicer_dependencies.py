"""Dependencies inside Slicer: the list matches pyproject, torch is never replaced, no prompts in testing mode."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from FOVCompletionLib import dependencies
from FOVCompletionLib.dependencies import (
    MINIMUM_TORCH_VERSION,
    NOT_NEEDED_IN_SLICER,
    REQUIREMENTS,
    DependencyError,
    ensurePackages,
    ensureTorch,
    importedAmong,
    missingRequirements,
    torchVersionIsSufficient,
    writeTorchConstraints,
)

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_follow_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {Requirement(text).name: str(Requirement(text).specifier) for text in project}
    ours = {Requirement(text).name: str(Requirement(text).specifier) for text in REQUIREMENTS}
    assert "torch" not in ours  # torch only ever comes from the PyTorch extension
    for name, specifier in expected.items():
        if name in NOT_NEEDED_IN_SLICER:
            continue
        assert ours.get(name) == specifier, (
            f"{name}{specifier} is in pyproject.toml but not in dependencies.py"
        )
    assert set(ours) <= set(expected), "dependencies.py installs a package pyproject.toml does not declare"
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


def test_constraints_pin_the_installed_torch(tmp_path):
    text = writeTorchConstraints(tmp_path / "c.txt").read_text()
    assert text == f"torch=={importlib.metadata.version('torch')}\n"
    Requirement(text.strip())  # valid pip syntax


def test_imported_packages_need_a_restart():
    assert importedAmong(["numpy>=1", "surely-not-installed-fovc"]) == ["numpy"]


class FakeSlicer:
    """Records what the dependency code asks of Slicer."""

    def __init__(self, with_pip_ensure: bool, confirm: bool = True):
        self.calls = []
        self.util = SimpleNamespace(
            confirmOkCancelDisplay=lambda *a, **k: self.calls.append(("confirm", a)) or confirm,
            pip_install=lambda args: self.calls.append(("pip_install", args)),
        )
        if with_pip_ensure:
            self.packaging = SimpleNamespace(
                pip_ensure=lambda reqs, **kw: self.calls.append(("pip_ensure", reqs, kw))
            )


@pytest.mark.parametrize("testing", [True, False])
def test_pip_ensure_gets_the_torch_pin_and_prompts_only_outside_testing(tmp_path, testing):
    fake = FakeSlicer(with_pip_ensure=True)
    assert ensurePackages(fake, tmp_path / "c.txt", testing=testing) is False
    [(kind, requirements, options)] = fake.calls
    assert kind == "pip_ensure" and requirements == list(REQUIREMENTS)
    assert Path(options["constraints"]).read_text().startswith("torch==")
    assert options["prompt_install"] is (not testing) and options["prompt_restart"] is (not testing)
    assert options["skip_in_testing"] is False  # the self-test needs the packages too


def test_older_slicer_asks_once_then_pip_installs_with_constraints(tmp_path, monkeypatch):
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: ["numpy>=1.24", "monai>=1.4"])
    fake = FakeSlicer(with_pip_ensure=False)
    restart = ensurePackages(fake, tmp_path / "c.txt", testing=False)
    assert [call[0] for call in fake.calls] == ["confirm", "pip_install"]
    args = fake.calls[1][1]
    assert args[:2] == ["numpy>=1.24", "monai>=1.4"] and args[2] == "-c"
    assert Path(args[3]).read_text().startswith("torch==")
    assert restart is True  # numpy is already imported in this process

    quiet = FakeSlicer(with_pip_ensure=False)
    ensurePackages(quiet, tmp_path / "c.txt", testing=True)
    assert [call[0] for call in quiet.calls] == ["pip_install"]  # no prompt in testing mode

    declined = FakeSlicer(with_pip_ensure=False, confirm=False)
    with pytest.raises(DependencyError, match="cancelled"):
        ensurePackages(declined, tmp_path / "c.txt", testing=False)
    assert [call[0] for call in declined.calls] == ["confirm"]


def test_nothing_missing_installs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: [])
    fake = FakeSlicer(with_pip_ensure=False)
    assert ensurePackages(fake, tmp_path / "c.txt", testing=False) is False and fake.calls == []


def fake_pytorch_utils(installed: bool, installs: bool = True):
    calls = []

    class Logic:
        def torchInstalled(self):
            return installed

        def installTorch(self, **kwargs):
            calls.append(kwargs)
            return object() if installs else None

    return SimpleNamespace(PyTorchUtilsLogic=Logic), calls


def test_torch_comes_from_the_pytorch_extension():
    with pytest.raises(DependencyError, match="PyTorch extension"):
        ensureTorch(None, testing=False)
    module, calls = fake_pytorch_utils(installed=False)
    ensureTorch(module, testing=True)
    assert calls == [{"askConfirmation": False, "torchVersionRequirement": f">={MINIMUM_TORCH_VERSION}"}]
    module, calls = fake_pytorch_utils(installed=False)
    ensureTorch(module, testing=False)
    assert calls[0]["askConfirmation"] is True
    module, _ = fake_pytorch_utils(installed=False, installs=False)
    with pytest.raises(DependencyError, match="not installed"):
        ensureTorch(module, testing=False)
    module, calls = fake_pytorch_utils(installed=True)
    ensureTorch(module, testing=False)  # the installed torch (>= 2.2 here) is kept
    assert calls == []
