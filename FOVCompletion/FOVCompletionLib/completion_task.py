"""One completion run: input node -> temporary file -> engine process -> new volume nodes.

The temporary folder is removed in every outcome (success, engine error, cancel, failure to start), and the
input node is only read. `poll()` does all scene work on the caller's thread; the widget calls it from a QTimer,
the console API through `wait()`.
"""

from __future__ import annotations

import enum
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .background_process import BackgroundProcess
from .display import COMPLETION_ROLE, KNOWN_REGION_ROLE, SPREAD_ROLE, copyDisplaySettings, tagRole
from .engine_command import CompletionOptions, buildCompletionCommand, engineEnvironment
from .live_preview import PreviewVolume, restoreNode, snapshotNode
from .progress_events import (
    DoneEvent,
    EngineEvent,
    ErrorEvent,
    LogLine,
    ProgressEvent,
    StartEvent,
    parseEngineLine,
)
from .volume_files import readVolumeFromFile, writeVolumeToFile
from .volume_geometry import sagittalSliceCount

CANCELLED_EXIT_CODE = 130
PREVIEW_FILE_NAME = "preview.nii"  # uncompressed: the engine rewrites it every few steps
LOG_LINES_IN_ERROR = 5


class TaskState(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class CompletionNodes:
    """The nodes a run produced: the completed volume, the known-region mask (label map), the spread map."""

    output: object
    mask: object | None = None
    spread: object | None = None


SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"  # what the panel's volume selectors offer (no child classes)
NODE_KINDS = {"vtkMRMLLabelMapVolumeNode": "a label map", "vtkMRMLVectorVolumeNode": "a vector volume"}


def _className(node) -> str:
    return node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__


def checkVolumeNodes(inputNode, outputNode=None) -> None:
    """Refuse, with one line and before anything is written, nodes the panel's selectors would not offer: the
    engine would complete a label map as an image, refuse a vector volume only after the export, and a node
    outside the scene or of another class would fail with an AttributeError (or, as output, after the run)."""
    if inputNode is None:
        raise ValueError("select an input volume that has image data")
    if _className(inputNode) != SCALAR_VOLUME_CLASS:
        kind = NODE_KINDS.get(_className(inputNode), _className(inputNode))
        raise ValueError(f"the input must be a scalar (grayscale) volume, not {kind}")
    if inputNode.GetScene() is None:
        raise ValueError("the input volume is not in the scene (it was deleted)")
    image = inputNode.GetImageData()
    if image is None:
        raise ValueError("select an input volume that has image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(
            f"the input has {image.GetNumberOfScalarComponents()} values per voxel; a grayscale volume is required"
        )
    if outputNode is None:
        return
    if outputNode is inputNode:
        raise ValueError("the output volume must not be the input volume (the input is never modified)")
    if _className(outputNode) != SCALAR_VOLUME_CLASS:
        raise ValueError(f"the output must be a scalar volume, not {_className(outputNode)}")
    if outputNode.GetScene() is not inputNode.GetScene():
        raise ValueError(f"the output volume {outputNode.GetName()!r} is not in the input volume's scene")


class CompletionTask:
    """Runs the engine on `inputNode`; state moves NOT_STARTED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED."""

    def __init__(
        self,
        inputNode,
        options: CompletionOptions,
        pythonExecutable: str | os.PathLike,
        outputNode=None,
        temporaryRoot: str | os.PathLike | None = None,
        environment: Mapping[str, str] | None = None,
        onEvent: Callable[[EngineEvent], None] | None = None,
        onFinished: Callable[[CompletionTask], None] | None = None,
    ) -> None:
        checkVolumeNodes(inputNode, outputNode)
        options.validate(sagittalSliceCount(inputNode))
        self.inputNode = inputNode
        self.scene = inputNode.GetScene()
        self.options = options
        self.pythonExecutable = str(pythonExecutable)
        self.outputNode = outputNode
        self.temporaryRoot = temporaryRoot
        self.environment = engineEnvironment(environment)
        self.onEvent = onEvent
        self.onFinished = onFinished
        self.state = TaskState.NOT_STARTED
        self.errorMessage = ""
        self.log: list[str] = []
        self.lastProgress: ProgressEvent | None = None
        self.startInfo: StartEvent | None = None
        self.result: CompletionNodes | None = None
        self.workingFolder: Path | None = None
        self.process: BackgroundProcess | None = None
        # The output node, filled in place by the engine's live preview (options.previewEvery) while it runs.
        self.preview = PreviewVolume(self.scene, self._outputName(), inputNode, outputNode)
        self._done: DoneEvent | None = None
        self._engineError: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Export the input and start the engine; on any failure nothing is left behind and the error is raised."""
        if self.state is not TaskState.NOT_STARTED:
            raise RuntimeError("a completion task runs once")
        self.workingFolder = Path(tempfile.mkdtemp(prefix="FOVCompletion-", dir=self.temporaryRoot))
        try:
            inputPath = writeVolumeToFile(self.inputNode, self.workingFolder / "input.nii")
            command = buildCompletionCommand(
                self.pythonExecutable,
                inputPath,
                self.workingFolder / "completed.nii.gz",
                self.options,
                maskPath=self.workingFolder / "known-region.nii.gz",
                spreadPath=self.workingFolder / "spread.nii.gz",
                previewPath=self.workingFolder / PREVIEW_FILE_NAME,
            )
            self._addLog("Command: " + " ".join(command))
            self.process = BackgroundProcess(command, self.environment, self.workingFolder)
            self.process.start()
        except BaseException:
            self._removeWorkingFolder()
            self.state = TaskState.FAILED
            raise
        self.state = TaskState.RUNNING

    @property
    def running(self) -> bool:
        return self.state is TaskState.RUNNING

    @property
    def previewNode(self):
        """The output node the live preview fills (None before the first preview)."""
        return self.preview.node

    @property
    def engineSeconds(self) -> float | None:
        """How long the engine reported the completion took (None until it reported a result)."""
        return self._done.seconds if self._done is not None else None

    def poll(self) -> bool:
        """Handle the output that arrived; when the process has ended, load the results. True while running.

        An unexpected error while doing so fails the task (engine stopped, temporary files removed) instead of
        leaving it running; only an error raised by the caller's `onFinished` propagates.
        """
        if self.state is not TaskState.RUNNING:
            return False
        if self.inputNode.GetScene() is not self.scene:  # the scene was closed, or the input deleted
            self._stop(TaskState.CANCELLED, "the input volume left the scene; nothing was added")
            return False
        try:
            for line in self.process.poll():
                self._handle(parseEngineLine(line))
            if self.process.returnCode is not None:
                self._finish(self.process.returnCode)
        except Exception as error:
            if self.state is not TaskState.RUNNING:  # raised by onFinished, after the task ended
                raise
            self.fail(f"unexpected error while handling the engine's output: {error!r}")
        return self.running

    def wait(
        self, timeout: float | None = None, interval: float = 0.1, idle: Callable[[], None] | None = None
    ):
        """Block until the run ends (console API, self-test); returns the result nodes or raises RuntimeError."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"completion did not finish within {timeout} s and was cancelled")
            if idle is not None:
                idle()
            time.sleep(interval)
        if self.state is TaskState.SUCCEEDED:
            return self.result
        raise RuntimeError(self.errorMessage or f"completion {self.state.value}")

    @property
    def cancelling(self) -> bool:
        """A cancel was requested and the engine has not stopped yet (`poll()` concludes the task)."""
        return self.running and self.process.cancelled

    def requestCancel(self) -> None:
        """Ask the engine to stop and return at once (the panel's Cancel: the GUI stays responsive). The task
        stays RUNNING until a later `poll()` sees the engine gone, killed after the grace period if it did not
        stop by itself, and then ends CANCELLED: nothing is added to the scene, even if the engine finished in
        the meantime, and live previews that arrive meanwhile are not shown."""
        if self.state is TaskState.RUNNING:
            self.process.requestCancel()

    def cancel(self) -> None:
        """Stop the engine before returning (the process tree is killed after the grace period); nothing is
        added to the scene. For callers that cannot wait for `poll()`: a scene that closes, a module that
        unloads, a timeout."""
        if self.state is not TaskState.RUNNING:
            return
        self.process.cancel()
        for line in self.process.poll():
            self._handle(parseEngineLine(line))
        self._conclude(TaskState.CANCELLED, "cancelled; nothing was added to the scene")

    def fail(self, message: str) -> None:
        """End a running task as FAILED with `message`: the engine is stopped, nothing is added to the scene."""
        self._stop(TaskState.FAILED, message)

    def _stop(self, state: TaskState, message: str) -> None:
        if self.state is not TaskState.RUNNING:
            return
        if self.process is not None:
            self.process.cancel(gracePeriod=0)
        self._conclude(state, message)

    # -- internals -------------------------------------------------------------------------------------------

    def _addLog(self, text: str) -> None:
        self.log.append(text)

    def _handle(self, event: EngineEvent) -> None:
        if isinstance(event, LogLine):
            self._addLog(event.text)
        elif isinstance(event, StartEvent):
            self.startInfo = event
        elif isinstance(event, ProgressEvent):
            self.lastProgress = event
            if event.message:  # a note of the engine's own, such as which candidate a window kept
                self._addLog(event.message)
            if event.preview and not self.cancelling:
                self._showPreview(event.preview)
        elif isinstance(event, DoneEvent):
            self._done = event
        elif isinstance(event, ErrorEvent):
            self._engineError = event.message
            self._addLog("Error: " + event.message)
        if self.onEvent is not None:
            self.onEvent(event)

    def _showPreview(self, reported: str) -> None:
        """Update the output node from the preview file; a preview that cannot be shown only costs a log line."""
        path = Path(reported)
        if not path.is_absolute():
            path = self.workingFolder / path
        try:
            self.preview.update(path)
        except Exception as error:  # the run goes on; its result does not depend on the preview
            self._addLog(f"The live preview could not be shown: {error}")

    def _outputName(self) -> str:
        return f"{self.inputNode.GetName() or 'volume'} completed"

    def _finish(self, returnCode: int) -> None:
        if self.process.cancelled or returnCode == CANCELLED_EXIT_CODE:
            self._conclude(TaskState.CANCELLED, "cancelled; nothing was added to the scene")
        elif returnCode != 0 or self._done is None:
            self._conclude(TaskState.FAILED, self._failureMessage(returnCode))
        else:
            try:
                self.result = self._loadResults(self._done)
            except Exception as error:  # any failure to load ends the task; _loadResults removed its nodes
                self._conclude(TaskState.FAILED, f"the results could not be loaded: {error}")
            else:
                self._conclude(TaskState.SUCCEEDED, "")

    def _failureMessage(self, returnCode: int) -> str:
        if self._engineError:
            return self._engineError
        tail = [line for line in self.log if line.strip()][-LOG_LINES_IN_ERROR:]
        detail = ("; last output: " + " | ".join(tail)) if tail else ""
        if returnCode == 0:
            return "the engine ended without reporting a result" + detail
        return f"the engine stopped with exit code {returnCode}" + detail

    def _resultPath(self, reported: str | None, expectedName: str) -> Path | None:
        if not reported:
            return None
        path = Path(reported)
        if not path.is_absolute():
            path = self.workingFolder / path
        return path if path.is_file() else self.workingFolder / expectedName

    def _loadResults(self, done: DoneEvent) -> CompletionNodes:
        """The engine's files as nodes; on any failure the scene is as before the run (new nodes removed, a
        chosen output node given its content back: by the preview's snapshot when a preview filled it)."""
        inputName = self.inputNode.GetName() or "volume"
        created = []
        chosen = self.outputNode if self.outputNode is not None and self.previewNode is None else None
        saved = snapshotNode(chosen) if chosen is not None else None
        try:
            output = readVolumeFromFile(
                self.scene,
                self._resultPath(done.output, "completed.nii.gz"),
                self._outputName(),
                targetNode=self.previewNode or self.outputNode,  # the node the preview showed, if any
            )
            if output is not self.outputNode and output is not self.previewNode:
                created.append(output)
            mask = spread = None
            maskPath = self._resultPath(done.mask, "known-region.nii.gz")
            if maskPath is not None:
                mask = readVolumeFromFile(
                    self.scene, maskPath, f"{inputName} known region", "vtkMRMLLabelMapVolumeNode"
                )
                created.append(mask)
            spreadPath = self._resultPath(done.spread, "spread.nii.gz")
            if spreadPath is not None:
                spread = readVolumeFromFile(self.scene, spreadPath, f"{inputName} spread")
                created.append(spread)
            copyDisplaySettings(self.inputNode, output)
            for node, role in ((output, COMPLETION_ROLE), (mask, KNOWN_REGION_ROLE), (spread, SPREAD_ROLE)):
                if node is not None:
                    tagRole(node, role)
            parentTransformId = self.inputNode.GetTransformNodeID()
            for node in (output, mask, spread):
                if node is not None:
                    node.SetAndObserveTransformNodeID(parentTransformId)
        except BaseException:
            for node in created:
                self.scene.RemoveNode(node)
            if saved is not None:
                restoreNode(chosen, saved)
            raise
        return CompletionNodes(output, mask, spread)

    def _conclude(self, state: TaskState, message: str) -> None:
        self.state = state
        self.errorMessage = message
        if state is not TaskState.SUCCEEDED:
            self.preview.discard()  # nothing is added to the scene, and a chosen output node is given back
        self._removeWorkingFolder()
        if self.onFinished is not None:
            self.onFinished(self)

    def _removeWorkingFolder(self) -> None:
        if self.workingFolder is not None:
            shutil.rmtree(self.workingFolder, ignore_errors=True)
