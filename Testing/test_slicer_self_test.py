"""The module's self-test (FOVCompletionTest's logic part) on a slicer-core MRML scene, with the network blocked:
a real completion of the phantom by the engine in its own process (a tiny random bundle here, the bundled model in
Slicer), nothing installed; and with the engine's packages missing, the engine part is skipped, not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
import FOVCompletionLib.self_test as self_test
from FOVCompletionLib import dependencies
from FOVCompletionLib.display import COMPLETION_ROLE, ROLE_ATTRIBUTE
from FOVCompletionLib.sample_data import phantomVolumeNode
from FOVCompletionLib.self_test import runSelfTest

BLOCKED = "network access is blocked in this test"
# Imported by every Python started with this folder on PYTHONPATH (the engine process included).
NO_NETWORK_SITECUSTOMIZE = textwrap.dedent(
    f"""\
    import socket

    def _blocked(*args, **kwargs):
        raise OSError({BLOCKED!r})

    socket.socket.connect = socket.socket.connect_ex = _blocked
    socket.create_connection = socket.getaddrinfo = _blocked
    """
)


@pytest.fixture()
def offline(tmp_path, monkeypatch) -> dict[str, str]:
    """No network here nor in any child Python, and no installer may run: returns the children's environment."""
    import socket

    def blocked(*args, **kwargs):
        raise OSError(BLOCKED)

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)

    def noInstalling(*args, **kwargs):
        raise AssertionError("the self-test tried to install a dependency")

    monkeypatch.setattr(dependencies, "ensurePackages", noInstalling)
    monkeypatch.setattr(dependencies, "ensureTorch", noInstalling)
    folder = tmp_path / "no-network"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(NO_NETWORK_SITECUSTOMIZE)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return environment


def test_the_network_is_really_blocked(offline):
    import socket

    with pytest.raises(OSError, match=BLOCKED):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    child = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"],
        env=offline,
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode != 0 and BLOCKED in child.stderr


def test_self_test_completes_the_phantom_offline(offline, tiny_bundle, tmp_path):
    scene = slicer.vtkMRMLScene()
    work = tmp_path / "work"
    work.mkdir()
    loaded = []

    def loadPhantom():  # what Slicer's test does through Sample Data; 2 mm keeps the tiny run short
        loaded.append(phantomVolumeNode(scene, spacingMm=2.0))
        return loaded[-1]

    outcome = runSelfTest(
        scene,
        sys.executable,
        loadPhantom=loadPhantom,
        model=str(tiny_bundle),
        temporaryRoot=work,
        environment=offline,
        timeout=300,
    )
    assert outcome.ran and outcome.failures == [] and outcome.passed, outcome.failures
    assert outcome.knownRegion.reproducesInput() and outcome.knownRegion.knownVoxels > 0
    output = outcome.result.output
    assert output.GetScene() is scene and output.GetAttribute(ROLE_ATTRIBUTE) == COMPLETION_ROLE
    assert output.GetImageData().GetDimensions()[0] == 1  # one sagittal slice
    assert len(loaded) == 1 and list(work.iterdir()) == []  # temporary files removed


def test_self_test_fails_when_a_check_fails(offline, tiny_bundle, tmp_path):
    """The checks can fail: asking for more extension than the run gives is reported, not passed."""
    scene = slicer.vtkMRMLScene()
    phantom = phantomVolumeNode(scene, spacingMm=2.0)
    inputVoxels, inputAffine = self_test.arrayAndAffineFromVolume(phantom)
    outcome = runSelfTest(
        scene,
        sys.executable,
        loadPhantom=lambda: phantom,
        model=str(tiny_bundle),
        steps=1,
        extensionMm=16.0,
        temporaryRoot=tmp_path,
        environment=offline,
        timeout=300,
    )
    assert outcome.passed
    failures = self_test.completionFailures(phantom, inputVoxels, inputAffine, outcome.result, 64.0)
    assert failures and "grew by" in failures[0]
    inputVoxels[0, 0, 0] += 1
    failures = self_test.completionFailures(phantom, inputVoxels, inputAffine, outcome.result, 16.0)
    assert failures == ["the input volume was modified"]


def test_missing_engine_packages_skip_the_engine_part(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(self_test, "missingEngineDependencies", lambda: ["torch>=2.2", "monai>=1.4"])
    scene = slicer.vtkMRMLScene()

    def loadPhantom():
        raise AssertionError("the phantom needs the engine: it must not be loaded without it")

    work = tmp_path / "work"
    work.mkdir()
    outcome = runSelfTest(scene, sys.executable, loadPhantom=loadPhantom, temporaryRoot=work)
    assert not outcome.ran and not outcome.passed and outcome.result is None
    assert "torch>=2.2, monai>=1.4" in outcome.skippedBecause and "installs nothing" in outcome.skippedBecause
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == 0 and list(work.iterdir()) == []
