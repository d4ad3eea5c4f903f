"""FOVCompletion: complete a partial field of view of a sagittal T2w spine MRI with latent diffusion.

This file is the thin Slicer layer (module description, panel, console API, self-test); the work is done by
`FOVCompletionLib` (MRML, background process, display) and by the engine `fovcompletion` in a separate process.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from FOVCompletionLib import dependencies
from FOVCompletionLib.choices import ComputeDevice, SliceSelection
from FOVCompletionLib.completion_task import CompletionNodes, CompletionTask, TaskState
from FOVCompletionLib.display import DEFAULT_OVERLAY_OPACITY, setOverlayOpacity, showCompletion
from FOVCompletionLib.engine_command import CompletionOptions
from FOVCompletionLib.models import (
    availableModels,
    estimateSeconds,
    missingDefaultModelMessage,
    modelAfterAddingBundle,
)
from FOVCompletionLib.panel import (
    CANDIDATES_RANGE,
    EXTENSION_RANGE,
    SLICE_COUNT_RANGE,
    SLICE_INDEX_RANGE,
    STEPS_RANGE,
    ExtensionProblem,
    extensionProblem,
    modelSampling,
    sliceLimits,
    sliceRangeForNewInput,
)
from FOVCompletionLib.presets import ExtensionPreset, matchingPreset, presetExtensionMm
from FOVCompletionLib.progress_events import (
    DoneEvent,
    ErrorEvent,
    LogLine,
    ProgressEvent,
    StartEvent,
    describeProgress,
    describeStart,
    formatDuration,
)
from FOVCompletionLib.sample_data import (
    PHANTOM_FILE_NAME,
    PHANTOM_SAMPLE_NAME,
    registerPhantomSample,
    writePhantomFile,
)
from FOVCompletionLib.self_test import runSelfTest
from FOVCompletionLib.view_fit import stopKeepingFitted
from FOVCompletionLib.volume_geometry import extentAlongMm, firstScalarVolume, sagittalSliceCount

POLL_INTERVAL_MS = 200
# A live preview costs about two denoising steps (decoding the estimate): every 10 steps made a 50-step run 8% slower.
DEFAULT_PREVIEW_EVERY = 10

#
# FOVCompletion
#


class FOVCompletion(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FOV Completion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["FOVCompletion developers"]
        self.parent.helpText = _("""
Completes a partial field of view of a sagittal T2-weighted spine MRI: given, for example, only the cervical
spine, it synthesizes the anatomy above and below with a latent diffusion model (VQ-VAE and diffusion UNet from
MONAI). The known part of the scan conditions the generation and is kept exactly.
<p>Choose the input volume, the sagittal slices, how far to extend the field of view, and the number of denoising
steps, then press Apply. The computation runs in a separate process: the application stays responsive and the run
can be cancelled. The result is shown beside the original, with the original laid over it and the boundary of the
known region outlined.</p>
<p>The completed anatomy is synthetic: it is plausible, not measured, and must not be used for diagnosis.</p>
<p>Try it with the <i>FOVCompletionPhantomCervical</i> sample in the Sample Data module (generated on this machine,
no download).</p>
""")
        self.parent.acknowledgementText = _("""
The method follows NeuroPoly's "FOV generation using latent diffusion model" (disc-labeling-playground), built on
MONAI GenerativeModels' 2D latent diffusion tutorial. The networks and schedulers come from MONAI core
(https://monai.io). The background-process design follows lassoan/SlicerMONAIAuto3DSeg and
lassoan/SlicerTotalSegmentator; PyTorch is installed through fepegar/SlicerPyTorch.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def phantomCachePath() -> str:
    """Where the generated phantom is kept: Slicer's sample data cache, so it is generated once."""
    return os.path.join(slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory(), PHANTOM_FILE_NAME)


def loadPhantomSample(source=None):
    """Generate the cervical phantom (first time only, offline) and load it through the Sample Data module.

    The phantom needs only numpy and scipy, which Slicer ships: loading the sample installs nothing (the engine's
    torch and MONAI are asked for when a completion runs). Sample Data calls this without catching, so a failure
    is shown here, not only in the Python console."""
    import SampleData

    path = phantomCachePath()
    if not os.path.isfile(path):
        with slicer.util.tryWithErrorDisplay(
            _("The phantom sample could not be generated."), waitCursor=True
        ):
            writePhantomFile(path)
    if source is None:
        return SampleData.downloadSample(PHANTOM_SAMPLE_NAME)
    return SampleData.SampleDataLogic().downloadFromSource(source)[0]


def registerSampleData():
    """Register the offline phantom sample in the Sample Data module."""
    import SampleData

    path = phantomCachePath()
    registerPhantomSample(
        SampleData.SampleDataLogic,
        path,
        # The file is generated into the cache by the custom downloader; once there, "downloading" it from its own
        # location is a no-op, so SampleData.downloadSample() works as for any other sample.
        uri=qt.QUrl.fromLocalFile(path).toString(),
        thumbnail=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "FOVCompletion.png"),
        downloader=loadPhantomSample,
        categoryTitle=_("FOV Completion"),
    )


#
# FOVCompletionParameterNode
#


@parameterNodeWrapper
class FOVCompletionParameterNode:
    """The panel's settings, saved with the scene.

    inputVolume - the partial scan (never modified).
    sliceSelection, sliceCount, sliceRangeFirst, sliceRangeLast - which sagittal slices to complete.
    extensionPreset, extendSuperiorMm, extendInferiorMm - how much field of view to add.
    model - the bundle name or folder (synchronised by hand: the choices depend on the installed bundles).
    steps, samples, seed, device - quality, number of samples, reproducibility, where to run.
    candidates - completions drawn per window, the one whose canal lasts furthest kept (K times the time).
    previewEvery - live preview: the output view is updated every this many steps while it runs (0: off).
    outputVolume - existing volume to write into; none creates a new volume for every run.
    overlayOpacity - opacity of the original over the completion.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    sliceSelection: SliceSelection = SliceSelection.CENTRED_COUNT
    sliceCount: Annotated[int, WithinRange(*SLICE_COUNT_RANGE)] = 5
    sliceRangeFirst: Annotated[int, WithinRange(*SLICE_INDEX_RANGE)] = 0
    sliceRangeLast: Annotated[int, WithinRange(*SLICE_INDEX_RANGE)] = 0
    extensionPreset: ExtensionPreset = ExtensionPreset.WHOLE_SPINE_FROM_CERVICAL
    extendSuperiorMm: Annotated[float, WithinRange(*EXTENSION_RANGE)] = 0.0
    extendInferiorMm: Annotated[float, WithinRange(*EXTENSION_RANGE)] = 500.0
    model: str = ""
    steps: Annotated[int, WithinRange(*STEPS_RANGE)] = 25
    samples: Annotated[int, WithinRange(1, 16)] = 1
    candidates: Annotated[int, WithinRange(*CANDIDATES_RANGE)] = 3
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: ComputeDevice = ComputeDevice.AUTO
    previewEvery: Annotated[int, WithinRange(0, 1000)] = DEFAULT_PREVIEW_EVERY
    outputVolume: vtkMRMLScalarVolumeNode
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_OVERLAY_OPACITY


# Parameters bound to a widget by hand instead of a SlicerParameterName (checked by the CI contract tests).
MANUALLY_SYNCHRONISED_WIDGETS = {"model": "modelComboBox"}
ADD_BUNDLE_ITEM = "addBundle"

#
# FOVCompletionWidget
#


class FOVCompletionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: settings bound to the parameter node, Apply/Cancel, progress, status and log."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.pollTimer = None  # made in setup(); cleanup() runs even where setup() failed
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None
        self._updating = False
        self._lastPreset = None
        self._lastInputId = None
        self._previewShown = False
        self._modelChoices = {}

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FOVCompletion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = FOVCompletionLogic()
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.progressBar.hide()

        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """The application closes or the module is reloaded: no engine process may outlive the module."""
        if self._task is not None and self._task.running:
            self._task.cancel()
        if self.pollTimer is not None:
            self.pollTimer.stop()
        if self.logic is not None:
            self.logic.cancelBackgroundTasks()
        stopKeepingFitted()  # its observer on the slice view would outlive the module
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
            )

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None and self._task.running:
            self._task.cancel()
        self.logic.cancelBackgroundTasks()  # their input nodes are going away
        stopKeepingFitted()  # the views start over
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = firstScalarVolume(slicer.mrmlScene)
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
            )
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Each widget with a "SlicerParameterName" property in the .ui is bound to that parameter.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            # Below the default priority: after the wrapper's own observers have refreshed the values it caches
            # (among observers of equal priority VTK calls the oldest last, and the input's is among the oldest).
            self.addObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified, priority=-1.0
            )
            self._lastPreset = self._parameterNode.extensionPreset
            # The input it was saved with is not a new input: its slice range (0..0 included) stays as saved.
            inputNode = self._parameterNode.inputVolume
            self._lastInputId = inputNode.GetID() if inputNode else None
            self.onParameterNodeModified()

    # -- keeping the panel consistent ------------------------------------------------------------------------

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._updating or not self._parameterNode:
            return
        self._updating = True
        try:
            self._followInputVolume()
            self._followPreset()
            self._showSliceWidgets()
            self._selectModelInComboBox(self._parameterNode.model)
            self._updateInformation()
            setOverlayOpacity(slicer.mrmlScene, self._parameterNode.overlayOpacity)
        finally:
            self._updating = False
        self._updateApplyButton()

    def _inputHeightMm(self) -> float:
        inputNode = self._parameterNode.inputVolume
        return extentAlongMm(inputNode, "S") if inputNode and inputNode.GetImageData() else 0.0

    def _followInputVolume(self) -> None:
        """Slice limits come from the selected volume; presets depend on its height."""
        inputNode = self._parameterNode.inputVolume
        inputId = inputNode.GetID() if inputNode else None
        hasImage = bool(inputNode and inputNode.GetImageData())
        count = sagittalSliceCount(inputNode) if hasImage else 0
        newInput = inputId != self._lastInputId and hasImage
        if newInput:  # before the new limits, which would clamp the range set (sliceRangeForNewInput)
            sliceRange = sliceRangeForNewInput(
                self._parameterNode.sliceRangeFirst, self._parameterNode.sliceRangeLast, count
            )
        limits = sliceLimits(count)  # within the parameters' ranges, whatever the volume
        for spinBox in (self.ui.sliceRangeFirstSpinBox, self.ui.sliceRangeLastSpinBox):
            spinBox.maximum = limits.indexMaximum
        self.ui.sliceCountSpinBox.maximum = limits.countMaximum
        if newInput:
            self._lastInputId = inputId
            self._parameterNode.sliceRangeFirst, self._parameterNode.sliceRangeLast = sliceRange
            self._applyPreset(self._parameterNode.extensionPreset)
        self.ui.sliceInfoLabel.text = (
            _("The input has {count} sagittal slices (0 to {last}).").format(count=count, last=count - 1)
            if hasImage
            else ""
        )

    def _applyPreset(self, preset) -> None:
        values = presetExtensionMm(preset, self._inputHeightMm())
        if values is not None:
            self._parameterNode.extendSuperiorMm, self._parameterNode.extendInferiorMm = values

    def _followPreset(self) -> None:
        """Choosing a preset sets the millimetres; editing the millimetres shows the matching preset or Custom."""
        parameters = self._parameterNode
        if self._inputHeightMm() <= 0:  # presets depend on the input's height: wait for an input
            pass
        elif parameters.extensionPreset != self._lastPreset:
            self._applyPreset(parameters.extensionPreset)
        elif parameters.extensionPreset is not ExtensionPreset.CUSTOM:
            parameters.extensionPreset = matchingPreset(
                parameters.extendSuperiorMm, parameters.extendInferiorMm, self._inputHeightMm()
            )
        self._lastPreset = parameters.extensionPreset

    def _showSliceWidgets(self) -> None:
        byCount = self._parameterNode.sliceSelection is SliceSelection.CENTRED_COUNT
        for widget in (self.ui.sliceCountLabel, self.ui.sliceCountSpinBox):
            widget.visible = byCount
        for widget in (self.ui.sliceRangeLabel, self.ui.sliceRangeWidget):
            widget.visible = not byCount

    def _sliceCountToRun(self) -> int:
        parameters = self._parameterNode
        if parameters.sliceSelection is SliceSelection.RANGE:
            return max(1, parameters.sliceRangeLast - parameters.sliceRangeFirst + 1)
        return parameters.sliceCount

    def _updateInformation(self) -> None:
        parameters = self._parameterNode
        height = self._inputHeightMm()
        if height > 0:
            total = height + parameters.extendSuperiorMm + parameters.extendInferiorMm
            self.ui.fieldOfViewLabel.text = _(
                "Field of view: {input:.0f} mm now, {total:.0f} mm completed."
            ).format(input=height, total=total)
        else:
            self.ui.fieldOfViewLabel.text = ""
        seconds = None
        engineAvailable = self.logic.engineAvailable()
        if height > 0 and engineAvailable:
            seconds = estimateSeconds(
                parameters.model or None,
                self._sliceCountToRun(),
                parameters.steps,
                parameters.extendSuperiorMm,
                parameters.extendInferiorMm,
                height,
                parameters.device.value,
                samples=parameters.samples,
                candidates=parameters.candidates,
            )
        problem = self._extensionProblemText()
        if not engineAvailable:
            self.ui.estimateLabel.text = _("(available once the dependencies are installed)")
        elif problem:
            self.ui.estimateLabel.text = problem
        elif seconds is None:
            self.ui.estimateLabel.text = _("(select an input volume and an installed model)")
        else:
            self.ui.estimateLabel.text = _("about {duration} ({device})").format(
                duration=formatDuration(seconds), device=parameters.device.label()
            )

    def _extensionProblemText(self) -> str | None:
        """Why the extensions set cannot run, in the user's language, or None."""
        parameters = self._parameterNode
        problem = parameters and extensionProblem(parameters.extendSuperiorMm, parameters.extendInferiorMm)
        if problem is ExtensionProblem.NOTHING_TO_ADD:
            return _("Extend the field of view superiorly and/or inferiorly.")
        if problem is ExtensionProblem.TALLER_THAN_A_BODY:
            return _("Extend by at most {limit:g} mm above and below together.").format(
                limit=EXTENSION_RANGE[1]
            )
        return None

    def _updateApplyButton(self) -> None:
        running = self._task is not None and self._task.running
        parameters = self._parameterNode
        if running:
            cancelling = self._task.cancelling
            self.ui.applyButton.text = _("Cancelling...") if cancelling else _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the completion now; nothing is added to the scene.")
            self.ui.applyButton.enabled = not cancelling
            return
        self.ui.applyButton.text = _("Apply")
        ready = bool(parameters and parameters.inputVolume and parameters.inputVolume.GetImageData())
        problem = self._extensionProblemText()
        self.ui.applyButton.enabled = ready and not problem
        if not ready:
            self.ui.applyButton.toolTip = _("Select an input volume.")
        elif problem:
            self.ui.applyButton.toolTip = problem
        else:
            self.ui.applyButton.toolTip = _("Complete the field of view. While running, this button cancels.")

    # -- models ----------------------------------------------------------------------------------------------

    def populateModels(self) -> None:
        comboBox = self.ui.modelComboBox
        wasBlocked = comboBox.blockSignals(True)
        comboBox.clear()
        self._modelChoices = {choice.value: choice for choice in availableModels()}
        for choice in self._modelChoices.values():
            comboBox.addItem(choice.label, choice.value)
            comboBox.setItemData(comboBox.count - 1, choice.description, qt.Qt.ToolTipRole)
        comboBox.addItem(_("Add a bundle from a folder..."), ADD_BUNDLE_ITEM)
        comboBox.blockSignals(wasBlocked)
        if self._parameterNode:
            self._selectModelInComboBox(self._parameterNode.model)

    def _selectModelInComboBox(self, model: str) -> None:
        comboBox = self.ui.modelComboBox
        index = comboBox.findData(model) if model else 0
        if index < 0:  # saved with a model that is not installed here: run what the combo box shows, not it
            index = 0
            shown = comboBox.itemData(0)
            replacement = "" if shown in (None, ADD_BUNDLE_ITEM) else shown
            logging.warning(
                f"FOVCompletion: the model {model!r} is not installed; using {replacement or 'the default'}"
            )
            # In the panel too: a saved run re-run with another model is not the run that was saved.
            self.ui.statusLabel.text = _(
                "The scene's model {model} is not installed here; {replacement} is selected instead. "
                "Add the model's bundle to repeat the saved run."
            ).format(model=model, replacement=replacement or _("the default model"))
            if self._parameterNode:
                self._parameterNode.model = replacement
        wasBlocked = comboBox.blockSignals(True)
        comboBox.currentIndex = max(0, index)
        comboBox.blockSignals(wasBlocked)

    def onModelActivated(self, index: int) -> None:
        value = self.ui.modelComboBox.itemData(index)
        if value == ADD_BUNDLE_ITEM:
            self.onAddBundle()
            return
        if (value or "") == self._parameterNode.model:  # the same model again: keep the settings as edited
            return
        with slicer.util.NodeModify(self._parameterNode):  # one update of the panel, not one per field
            self._parameterNode.model = value or ""
            self._applyModelSettings(value)

    def _applyModelSettings(self, model: str | None) -> None:
        """Choosing a model sets the steps and candidates it was measured best with (still editable after)."""
        choice = self._modelChoices.get(model or "")
        settings = modelSampling(choice.defaultSteps, choice.defaultCandidates) if choice else None
        if settings is not None:
            self._parameterNode.steps, self._parameterNode.candidates = settings

    def onAddBundle(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Choose a model bundle folder (with bundle.json)")
        )
        model, error = self._parameterNode.model, None
        if folder:
            try:
                self.logic.setupPythonRequirements()  # the engine verifies the bundle
                python = self.logic.pythonExecutable()  # and loads its weights in a process of its own
            except Exception as failure:
                error = failure
            else:
                with slicer.util.WaitCursor():
                    model, error = modelAfterAddingBundle(
                        folder, model, pythonExecutable=python, environment=slicer.util.startupEnvironment()
                    )
        # Always, failure or not: the list is read again (with the new bundle), then the combo box shows the model
        # to use instead of staying on the "Add..." entry. The list first: a model missing from it is replaced.
        self.populateModels()
        self._parameterNode.model = model
        self._selectModelInComboBox(model)
        if folder and error is None:
            self._applyModelSettings(model)
        if error is not None:
            slicer.util.errorDisplay(
                _("This folder is not a usable model bundle."), detailedText=f"{folder}: {error}"
            )

    # -- running ---------------------------------------------------------------------------------------------

    def completionOptions(self) -> CompletionOptions:
        parameters = self._parameterNode
        byRange = parameters.sliceSelection is SliceSelection.RANGE
        return CompletionOptions(
            slices=None if byRange else parameters.sliceCount,
            sliceRange=(parameters.sliceRangeFirst, parameters.sliceRangeLast + 1) if byRange else None,
            steps=parameters.steps,
            extendSuperiorMm=parameters.extendSuperiorMm,
            extendInferiorMm=parameters.extendInferiorMm,
            seed=parameters.seed,
            samples=parameters.samples,
            candidates=parameters.candidates,
            device=parameters.device.value,
            model=parameters.model or None,
            previewEvery=parameters.previewEvery,
        )

    def onApplyButton(self) -> None:
        if self._task is not None and self._task.running:
            # Without blocking: the poll timer ends the task when the engine has stopped (it is killed if it
            # has not after a few seconds), and onTaskFinished says so.
            self._task.requestCancel()
            self.ui.statusLabel.text = _("Cancelling...")
            self._updateApplyButton()
            return
        self.ui.logTextEdit.clear()
        self.ui.statusLabel.text = _("Checking dependencies...")
        with slicer.util.tryWithErrorDisplay(_("The completion could not be started."), waitCursor=True):
            try:
                self.logic.setupPythonRequirements()
                self.populateModels()  # the engine can now list the user's bundles too
                self.ui.statusLabel.text = _("Starting...")
                self._task = self.logic.startCompletion(
                    self._parameterNode.inputVolume,
                    self.completionOptions(),
                    outputNode=self._parameterNode.outputVolume,
                    onEvent=self.onEngineEvent,
                    onFinished=self.onTaskFinished,
                )
            except Exception:
                self.ui.statusLabel.text = _("Not started.")
                raise
            self._previewShown = False
            self.ui.progressBar.setRange(0, 0)  # busy until the engine reports its number of steps
            self.ui.progressBar.show()
            self.pollTimer.start()
        self._updateApplyButton()

    def onPollTimer(self) -> None:
        if self._task is None:
            self.pollTimer.stop()
            return
        try:
            self._task.poll()  # fails the task itself on an error in handling the output
        except Exception as error:  # raised by onTaskFinished: never leave a timer firing on a broken task
            logging.exception("FOVCompletion: error while finishing the completion")
            self.pollTimer.stop()
            if self._task is not None:
                self._task.fail(str(error))  # no-op when the task already ended
            self._task = None
            self.ui.progressBar.hide()
            self._updateApplyButton()
            slicer.util.errorDisplay(_("The completion failed: {error}").format(error=error))

    def appendLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def onEngineEvent(self, event) -> None:
        cancelling = self._task is not None and self._task.cancelling  # the status line keeps saying so
        if isinstance(event, LogLine):
            self.appendLog(event.text)
        elif isinstance(event, StartEvent):
            if not cancelling:
                self.ui.statusLabel.text = describeStart(event)
            self.appendLog(describeStart(event))
            self.ui.progressBar.setRange(0, max(1, event.totalSteps))
            self.ui.progressBar.value = 0
        elif isinstance(event, ProgressEvent):
            self.ui.progressBar.setRange(0, max(1, event.total))
            self.ui.progressBar.value = event.step
            self.ui.progressBar.setFormat(describeProgress(event))
            if event.message:  # which candidate a window kept
                self.appendLog(event.message)
            self._showPreviewOnce()
        elif isinstance(event, ErrorEvent):
            self.appendLog(_("Error: {message}").format(message=event.message))
        elif isinstance(event, DoneEvent) and not cancelling:
            self.ui.statusLabel.text = _("Loading the results...")

    def _showPreviewOnce(self) -> None:
        """The first live preview puts the output volume in the views; later ones update it in place."""
        if self._previewShown or self._task is None or self._task.previewNode is None:
            return
        self._previewShown = True
        self.logic.showResult(
            self._task.inputNode, CompletionNodes(self._task.previewNode), self._parameterNode.overlayOpacity
        )

    def onTaskFinished(self, task) -> None:
        self.pollTimer.stop()
        self.ui.progressBar.hide()
        self.ui.progressBar.resetFormat()
        if task.state is TaskState.SUCCEEDED:
            seconds = task.engineSeconds
            self.ui.statusLabel.text = _("Done in {duration}: {name}.").format(
                duration=formatDuration(seconds), name=task.result.output.GetName()
            )
            self.logic.showResult(task.inputNode, task.result, self._parameterNode.overlayOpacity)
        elif task.state is TaskState.CANCELLED:
            self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        else:
            self.ui.statusLabel.text = _("Failed: {message}").format(message=task.errorMessage)
            slicer.util.errorDisplay(
                _("The completion failed: {message}").format(message=task.errorMessage),
                detailedText="\n".join(task.log[-200:]),
            )
        self._task = None
        self._updateApplyButton()


#
# FOVCompletionLogic
#


class FOVCompletionLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable from the Python console without the panel.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("FOVCompletion")
        volume = slicer.util.getNode("FOVCompletionPhantomCervical")
        result = logic.complete(volume, extendInferiorMm=300, slices=1)  # the model's steps and candidates
        result.output, result.mask, result.spread

    With waitForCompletion=False the run goes on in the background; the module cancels it when the scene is
    closed or the application quits (and the engine stops by itself if Slicer dies: its stdin closes).
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._dependenciesChecked = False
        self._backgroundTasks = []  # (CompletionTask, QTimer polling it) of the console API's non-blocking runs

    def getParameterNode(self):
        return FOVCompletionParameterNode(super().getParameterNode())

    # -- dependencies ----------------------------------------------------------------------------------------

    @staticmethod
    def engineAvailable() -> bool:
        """True when the engine's dependencies are importable (without importing them)."""
        import importlib.util

        return all(importlib.util.find_spec(name) is not None for name in ("torch", "monai", "nibabel"))

    def setupPythonRequirements(self) -> None:
        """Install what the engine needs, after asking: torch through the PyTorch extension, the rest with pip
        (torch and Slicer's numpy pinned). Offers a restart when an upgraded package was already loaded.

        Called when a person presses Apply (or calls `complete`), never by the self-test. In testing mode nothing
        is installed: a missing package raises DependencyError.
        """
        if self._dependenciesChecked:
            return
        if not dependencies.missingEngineDependencies():
            self._dependenciesChecked = True
            return
        testing = slicer.app.testingEnabled()
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            PyTorchUtils = None
        dependencies.ensureTorch(PyTorchUtils, testing)
        constraints = os.path.join(tempfile.mkdtemp(prefix="FOVCompletion-pip-"), "constraints.txt")
        try:
            restartNeeded = dependencies.ensurePackages(
                slicer, constraints, testing, packaging=dependencies.slicerPackagingModule()
            )
        finally:
            shutil.rmtree(os.path.dirname(constraints), ignore_errors=True)
        if restartNeeded:
            if slicer.util.confirmYesNoDisplay(
                _(
                    "Python packages that were already loaded have been updated. Restart Slicer now to use them?"
                ),
                _("FOVCompletion - Restart Recommended"),
            ):
                slicer.util.restart()
            raise dependencies.DependencyError(
                _("Restart Slicer to finish installing the required packages.")
            )
        self._dependenciesChecked = True

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's Python launcher, which runs the engine in its own process."""
        executable = shutil.which("PythonSlicer")
        if executable:
            return executable
        if os.path.basename(sys.executable).lower().startswith("python"):
            return sys.executable
        raise RuntimeError(_("PythonSlicer was not found; the completion cannot run in the background."))

    # -- completion ------------------------------------------------------------------------------------------

    def startCompletion(
        self, inputNode, options: CompletionOptions, outputNode=None, onEvent=None, onFinished=None
    ) -> CompletionTask:
        """Export the input and start the engine; the caller polls the returned task (or waits for it)."""
        task = CompletionTask(
            inputNode,
            options,
            self.pythonExecutable(),
            outputNode=outputNode,
            temporaryRoot=slicer.app.temporaryPath,
            environment=slicer.util.startupEnvironment(),
            onEvent=onEvent,
            onFinished=onFinished,
        )
        logging.info(f"FOVCompletion: starting on {inputNode.GetName()} with {options}")
        task.start()
        return task

    def complete(
        self,
        inputNode,
        slices: int | None = None,
        sliceRange: tuple[int, int] | None = None,
        steps: int | None = None,
        extendSuperiorMm: float = 0.0,
        extendInferiorMm: float = 0.0,
        seed: int = 0,
        samples: int = 1,
        device: str = "auto",
        model: str | None = None,
        outputNode=None,
        previewEvery: int = 0,
        waitForCompletion: bool = True,
        showResult: bool = True,
        overlayOpacity: float = DEFAULT_OVERLAY_OPACITY,
        candidates: int | None = None,
    ):
        """Complete `inputNode` (console API). `sliceRange` is (first, stop) with stop excluded; `candidates` K > 1
        completes every window K times and keeps the one whose canal lasts furthest (K times the time); `steps` and
        `candidates` None: the model's settings (`fovcompletion models` lists them). With
        `previewEvery` N > 0 the output volume is created at the first live preview and updated in place every N
        steps while the engine runs (task.previewNode); the result then goes into that same node.

        With waitForCompletion=True returns CompletionNodes (output, mask, spread) or raises RuntimeError with the
        engine's message. Otherwise returns the running CompletionTask, polled by a timer; its result is shown
        when it ends.
        """
        options = CompletionOptions(
            slices=slices,
            sliceRange=tuple(sliceRange) if isinstance(sliceRange, list) else sliceRange,  # checked below
            steps=steps,
            extendSuperiorMm=extendSuperiorMm,
            extendInferiorMm=extendInferiorMm,
            seed=seed,
            samples=samples,
            candidates=candidates,
            device=device,
            model=model,
            previewEvery=previewEvery,
        )
        options.validate()  # a mistyped value is refused before any package is installed
        self.setupPythonRequirements()
        if waitForCompletion:
            task = self.startCompletion(inputNode, options, outputNode)
            result = task.wait(idle=slicer.app.processEvents)
            if showResult:
                self.showResult(inputNode, result, overlayOpacity)
            return result

        def finished(task):
            self._forgetBackgroundTask(task)
            if task.state is TaskState.SUCCEEDED and showResult:
                self.showResult(inputNode, task.result, overlayOpacity)
            elif task.state is TaskState.FAILED:
                logging.error(f"FOVCompletion failed: {task.errorMessage}")

        task = self.startCompletion(inputNode, options, outputNode, onFinished=finished)
        timer = qt.QTimer()
        timer.setInterval(POLL_INTERVAL_MS)
        timer.connect("timeout()", lambda: self._pollBackgroundTask(task))
        self._backgroundTasks.append((task, timer))
        timer.start()
        return task

    def _pollBackgroundTask(self, task: CompletionTask) -> None:
        try:
            task.poll()  # fails the task itself on an error in handling the output
        except Exception as error:  # raised while showing the result: stop polling, do not re-raise
            logging.exception("FOVCompletion: error while finishing a background completion")
            task.fail(str(error))  # no-op when the task already ended
            self._forgetBackgroundTask(task)

    def _forgetBackgroundTask(self, task: CompletionTask) -> None:
        for entry in [entry for entry in self._backgroundTasks if entry[0] is task]:
            entry[1].stop()
            self._backgroundTasks.remove(entry)

    def cancelBackgroundTasks(self) -> None:
        """Cancel the console API's non-blocking runs (scene close, module cleanup); nothing is added."""
        for task, _timer in list(self._backgroundTasks):
            task.cancel()  # its onFinished forgets it
            self._forgetBackgroundTask(task)

    def showResult(self, inputNode, result: CompletionNodes, overlayOpacity: float = DEFAULT_OVERLAY_OPACITY):
        """Side-by-side linked sagittal views: original | completion with the original over it and the outline."""
        return showCompletion(
            slicer.mrmlScene,
            inputNode,
            result.output,
            result.mask,
            overlayOpacity,
            appLogic=slicer.app.applicationLogic(),
        )

    def loadPhantomSample(self):
        return loadPhantomSample()


#
# FOVCompletionTest
#


class FOVCompletionTest(ScriptedLoadableModuleTest):
    """Self-test: the phantom sample completed by the bundled model on the CPU, checked for geometry and fidelity
    (FOVCompletionLib.self_test); offline, and it installs nothing (the engine part is skipped without the engine)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FOVCompletion_parameter_node()
        self.setUp()
        self.test_FOVCompletion_phantom()

    def test_FOVCompletion_parameter_node(self):
        """The panel's parameters round-trip through the scene's parameter node."""
        parameters = FOVCompletionLogic().getParameterNode()
        parameters.extensionPreset = ExtensionPreset.WHOLE_SPINE_FROM_LUMBAR
        parameters.device = ComputeDevice.CPU
        parameters.steps = 12
        again = FOVCompletionLogic().getParameterNode()
        self.assertEqual(again.extensionPreset, ExtensionPreset.WHOLE_SPINE_FROM_LUMBAR)
        self.assertEqual(again.device, ComputeDevice.CPU)
        self.assertEqual(again.steps, 12)

    def test_FOVCompletion_phantom(self):
        """A real completion on the CPU when the engine's packages are there; installs nothing, needs no network."""
        missingModel = missingDefaultModelMessage()
        if missingModel:
            self.fail(missingModel)

        def loadPhantom():
            self.delayDisplay("Loading the phantom sample")
            registerSampleData()
            return loadPhantomSample()

        self.delayDisplay("Completing one slice of the phantom with a few steps on the CPU")
        outcome = runSelfTest(
            slicer.mrmlScene,
            FOVCompletionLogic.pythonExecutable(),
            loadPhantom=loadPhantom,
            temporaryRoot=slicer.app.temporaryPath,
            environment=slicer.util.startupEnvironment(),
            idle=slicer.app.processEvents,
        )
        if not outcome.ran:
            logging.warning(f"FOVCompletion self-test: {outcome.skippedBecause}")
            self.delayDisplay(outcome.skippedBecause)
            return
        self.assertEqual(outcome.failures, [])
        self.delayDisplay("Test passed")
