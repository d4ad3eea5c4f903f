"""The module's self-test, without the application: a real completion of the phantom, checked for geometry and
fidelity, that installs nothing and needs no network.

`FOVCompletionTest` (in FOVCompletion.py) calls `runSelfTest` with the phantom sample loaded through Sample Data;
CI calls it with a plain MRML scene and a tiny bundle. When the engine's dependencies are missing the engine part is
skipped (the outcome says what is missing): a test never changes the installation it tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .completion_task import CompletionNodes, CompletionTask
from .dependencies import missingEngineDependencies
from .engine_command import CompletionOptions
from .known_region import KnownRegionCheck, checkKnownRegion
from .sample_data import phantomVolumeNode
from .volume_geometry import arrayAndAffineFromVolume, extentAlongMm, sagittalSliceCount, spacing

SELF_TEST_STEPS = 3
SELF_TEST_EXTENSION_MM = 64.0
SELF_TEST_TIMEOUT_S = 1800.0  # the bundled model's three steps take seconds; this only stops a hung engine


@dataclass
class SelfTestOutcome:
    """What the self-test did: skipped (and why), or ran, with the result and every check that failed."""

    skippedBecause: str = ""
    result: CompletionNodes | None = None
    knownRegion: KnownRegionCheck | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return not self.skippedBecause

    @property
    def passed(self) -> bool:
        return self.ran and not self.failures


def skipReason(missing: list[str]) -> str:
    return (
        "the engine part of the self-test is skipped: the engine's Python packages are missing ("
        + ", ".join(missing)
        + "); press Apply in the module to install them (a test installs nothing)"
    )


def completionFailures(
    inputNode, inputVoxels, inputAffine, result: CompletionNodes, extensionMm: float
) -> list[str]:
    """What is wrong with a one-slice completion extended by `extensionMm` inferiorly (empty when nothing)."""
    failures = []
    voxels, affine = arrayAndAffineFromVolume(inputNode)
    if not np.array_equal(voxels, inputVoxels) or np.abs(affine - inputAffine).max() > 1e-9:
        failures.append("the input volume was modified")
    outputAffine = arrayAndAffineFromVolume(result.output)[1]
    if np.abs(spacing(outputAffine) - spacing(inputAffine)).max() > 1e-3:
        failures.append(
            f"the output spacing {spacing(outputAffine)} is not the input's {spacing(inputAffine)}"
        )
    if sagittalSliceCount(result.output) != 1:
        failures.append(f"{sagittalSliceCount(result.output)} sagittal slices instead of 1")
    grownBy = extentAlongMm(result.output, "S") - extentAlongMm(inputNode, "S")
    if not extensionMm - 1e-3 <= grownBy < extensionMm + 2 * spacing(inputAffine).max():
        failures.append(f"the field of view grew by {grownBy:.1f} mm instead of {extensionMm:.1f} mm")
    if result.mask is None:
        failures.append("no known-region mask")
    if result.spread is not None:
        failures.append("a spread map for a single sample")
    return failures


def runSelfTest(
    scene,
    pythonExecutable: str | os.PathLike,
    loadPhantom: Callable[[], object] | None = None,
    model: str | None = None,
    steps: int = SELF_TEST_STEPS,
    extensionMm: float = SELF_TEST_EXTENSION_MM,
    temporaryRoot: str | os.PathLike | None = None,
    environment: Mapping[str, str] | None = None,
    idle: Callable[[], None] | None = None,
    timeout: float = SELF_TEST_TIMEOUT_S,
) -> SelfTestOutcome:
    """Load the phantom (`loadPhantom`, by default generated into `scene`), complete one sagittal slice of it on
    the CPU with a few steps, and check the result.

    Never installs anything: with the engine's dependencies missing (the phantom needs them too) it returns a
    skipped outcome before doing anything.
    """
    missing = missingEngineDependencies()
    if missing:
        return SelfTestOutcome(skippedBecause=skipReason(missing))
    inputNode = loadPhantom() if loadPhantom is not None else phantomVolumeNode(scene)
    inputVoxels, inputAffine = arrayAndAffineFromVolume(inputNode)
    options = CompletionOptions(
        slices=1, steps=steps, candidates=1, extendInferiorMm=extensionMm, device="cpu", model=model or None
    )
    task = CompletionTask(
        inputNode, options, pythonExecutable, temporaryRoot=temporaryRoot, environment=environment
    )
    task.start()
    result = task.wait(timeout=timeout, idle=idle)
    outcome = SelfTestOutcome(result=result)
    outcome.failures = completionFailures(inputNode, inputVoxels, inputAffine, result, extensionMm)
    if result.mask is not None:
        outcome.knownRegion = checkKnownRegion(inputNode, result.output, result.mask)
        if not outcome.knownRegion.reproducesInput():
            outcome.failures.append(f"the known region does not reproduce the input: {outcome.knownRegion}")
    return outcome
