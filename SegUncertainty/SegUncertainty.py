"""SegUncertainty: segment a volume, see where the segmentation is likely wrong, review the riskiest regions first.

A thin Slicer front end over SegUncertaintyLib. Apply writes the volume to a work folder and runs
``seguncertainty predict --progress json`` in a child process with Slicer's Python (the UI stays
responsive; Cancel stops it cleanly). The outputs are loaded back onto the volume's exact grid: the
segmentation, the estimated probability of error as an Inferno heatmap over the image, the fragile
voxels as an outline, the calibrated probabilities, and a table of high-risk regions, worst first.
Each region is accepted or corrected in the embedded Segment Editor (masked to the region); every
action is saved at once in a review session next to the outputs, with every correction kept as a
new label map version. All scene work is in ``SegUncertaintyLib.mrml`` and tested there.
"""

import importlib.util
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# In a source checkout (the repository's SegUncertainty folder added to Slicer's module paths)
# SegUncertaintyLib is a sibling of this module's folder rather than installed next to the module file.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_REPO, "SegUncertaintyLib")) and _REPO not in sys.path:
    sys.path.append(_REPO)

UNCERTAINTY_CHOICES = ["auto", "segwithu", "msp", "entropy", "mc-dropout", "tta", "ensemble"]
DEVICE_CHOICES = ["auto", "cpu", "cuda"]
TORCH_REQUIREMENT = ">=2.1"
SAMPLE_NAME = "LIDCNoduleDemo"
SAMPLE_FILE = "lidc-nodule-demo.nrrd"
SAMPLE_SHA256 = "c0b25357cae6af4d238ac4066f84cf99d20442300825abd47fd8bd2d2564f221"
# a real T1 head MRI (ITK's example data, Apache-2.0) for the deepbet brain model
HEAD_SAMPLE_NAME = "ITKT1Head"
HEAD_SAMPLE_FILE = "itk-t1-head.nii.gz"
HEAD_SAMPLE_SHA256 = "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327"
POLL_MILLISECONDS = 250


class SegUncertainty(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegUncertainty")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SegUncertainty developers"]
        self.parent.helpText = _(
            "Segments a volume with a local PyTorch model and shows where the segmentation is likely wrong: "
            "an estimated probability of error per voxel (heatmap), the voxels an equally good model would "
            "label differently (fragile outline), and a list of high-risk regions to review worst first. "
            "Accept or correct each region; every correction is kept as a new version."
        )
        self.parent.acknowledgementText = _(
            "Built on MONAI, SimpleITK and PyTorch. The bundled nodule model was trained on LIDC-IDRI "
            "radiologist outlines (CC BY 3.0, The Cancer Imaging Archive) with synthetic CT intensities."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the bundled demo chest CT and T1 head to Sample Data (no download: they ship with the extension)."""
    import SampleData

    from SegUncertaintyLib.resources import sample_path

    icons = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    for name, file, sha256, thumbnail in (
        (SAMPLE_NAME, SAMPLE_FILE, SAMPLE_SHA256, os.path.join(icons, f"{SAMPLE_NAME}.png")),
        (HEAD_SAMPLE_NAME, HEAD_SAMPLE_FILE, HEAD_SAMPLE_SHA256, None),
    ):
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="SegUncertainty",
            sampleName=name,
            thumbnailFileName=thumbnail,
            uris=sample_path(file).as_uri(),
            fileNames=file,
            nodeNames=name,
            checksums=f"SHA256:{sha256}",
        )


@parameterNodeWrapper
class SegUncertaintyParameterNode:
    """The module's settings (saved with the scene).

    inputVolume: the image to segment. model: a bundled model name or a package folder.
    uncertainty: the method (auto: the model's head). fragility: run the adversarial search.
    device: where the network runs. heatmapOpacity / heatmapThreshold: how the risk map is shown.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "lidc-nodule"
    uncertainty: Annotated[str, Choice(UNCERTAINTY_CHOICES)] = "auto"
    fragility: bool = True
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.1


class SegUncertaintyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.process = None
        self.startedAt = 0.0
        self.currentRegion = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MILLISECONDS)
        self.timer.connect("timeout()", self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegUncertainty.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegUncertaintyLogic()

        for name in self.logic.bundledModels():
            self.ui.modelComboBox.addItem(name)
        self.ui.progressBar.setVisible(False)
        self.ui.correctionFrame.setVisible(False)
        self.segmentEditorWidget = slicer.qMRMLSegmentEditorWidget()
        self.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.segmentEditorWidget.segmentationNodeSelectorVisible = False
        self.segmentEditorWidget.sourceVolumeNodeSelectorVisible = False
        self.segmentEditorWidget.switchToSegmentationsButtonVisible = False
        self.ui.correctionFrame.layout().addWidget(self.segmentEditorWidget)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelBrowseButton.connect("clicked(bool)", self.onBrowseModel)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.heatmapThresholdSlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.regionTableView.connect("selectionChanged()", self.onRegionSelected)
        self.ui.acceptButton.connect("clicked(bool)", self.onAccept)
        self.ui.correctButton.connect("clicked(bool)", self.onCorrect)
        self.ui.nextButton.connect("clicked(bool)", self.onNext)
        self.ui.saveCorrectionButton.connect("clicked(bool)", self.onSaveCorrection)
        self.ui.cancelCorrectionButton.connect("clicked(bool)", self.onLeaveCorrection)
        self.initializeParameterNode()
        self.updateReviewButtons()

    def cleanup(self):
        self.timer.stop()
        if self.process is not None:
            self.process.cancel(grace_seconds=5)
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self):
        self.segmentEditorWidget.uninstallKeyboardShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)

    def onSceneStartClose(self, caller, event):
        if self.process is not None:
            self.process.cancel(grace_seconds=5)
            self.finishRun()
        self.segmentEditorWidget.setSegmentationNode(None)
        self.logic.reset()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.showReviewState()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
            self.updateApplyButton()

    def updateApplyButton(self, caller=None, event=None):
        if self.process is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the segmentation (nothing is written)")
            self.ui.applyButton.enabled = True
        elif self._parameterNode and self._parameterNode.inputVolume:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Segment the volume and compute the uncertainty maps")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Select an input volume")
            self.ui.applyButton.enabled = False

    # Running the model

    def onApplyButton(self):
        if self.process is not None:
            self.ui.statusLabel.text = _("Cancelling...")
            slicer.app.processEvents()
            self.process.cancel(grace_seconds=5)
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            self.logic.ensureDependencies()
            parameters = self._parameterNode
            self.process = self.logic.startPrediction(
                parameters.inputVolume,
                parameters.model,
                parameters.uncertainty,
                parameters.fragility,
                parameters.device,
            )
            self.startedAt = time.monotonic()
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.setVisible(True)
            self.ui.statusLabel.text = _("Starting...")
            self.updateApplyButton()
            self.timer.start()

    def onPoll(self):
        process = self.process
        if process is None:
            return
        process.poll()
        self.ui.progressBar.setValue(int(100 * process.fraction))
        elapsed = time.monotonic() - self.startedAt
        stage = process.stage or _("starting")
        self.ui.statusLabel.text = _("{stage} ({seconds:.0f} s)").format(stage=stage, seconds=elapsed)
        if not process.finished():
            return
        self.finishRun()
        failure = process.failure_message()
        if failure is not None:
            self.ui.statusLabel.text = failure.splitlines()[0]
            if not process.cancelled:
                slicer.util.errorDisplay(
                    _("The segmentation failed: {message}").format(message=failure.splitlines()[0]),
                    detailedText="\n".join(process.log),
                )
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
            self.logic.loadResults(self.logic.reference)  # the volume the run started on, whatever is selected now
            self.onDisplayChanged()
            self.ui.statusLabel.text = _("Done in {seconds:.0f} s. Outputs and review: {folder}").format(
                seconds=elapsed, folder=self.logic.workFolder
            )
        self.showReviewState()

    def finishRun(self):
        self.timer.stop()
        self.process = None
        self.ui.progressBar.setVisible(False)
        self.updateApplyButton()

    def onBrowseModel(self):
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Model package folder (with model.json)")
        )
        if folder:
            self._parameterNode.model = folder

    def onDisplayChanged(self, value=None):
        if self.logic.results is not None and self._parameterNode:
            self.logic.setHeatmapDisplay(self._parameterNode.heatmapOpacity, self._parameterNode.heatmapThreshold)

    # Review

    def showReviewState(self):
        results = self.logic.results
        self.ui.regionTableView.setMRMLTableNode(results.region_table if results else None)
        self.ui.volumesLabel.text = self.logic.volumesText() if results else ""
        self.ui.remainingRiskLabel.text = (
            self.logic.reviewText() if results else _("Run a segmentation to list its high-risk regions.")
        )
        self.ui.sessionLabel.text = (
            _("Review saved after every action in {folder}").format(folder=self.logic.session.folder)
            if self.logic.session
            else ""
        )
        self.updateReviewButtons()

    def updateReviewButtons(self):
        ready = self.logic.session is not None and self.currentRegion is not None
        correcting = self.logic.editArea is not None
        self.ui.acceptButton.enabled = ready and not correcting
        self.ui.correctButton.enabled = ready and not correcting
        self.ui.nextButton.enabled = self.logic.session is not None and not correcting
        self.ui.correctionFrame.setVisible(correcting)

    def onRegionSelected(self):
        rows = self.ui.regionTableView.selectedMRMLTableRows()
        if not rows or self.logic.session is None or self.logic.editArea is not None:
            return
        self.currentRegion = self.logic.session.regions[rows[0]].label
        self.logic.goToRegion(self.currentRegion)
        self.updateReviewButtons()

    def selectRegion(self, label):
        self.currentRegion = label
        if label is None:
            self.ui.regionTableView.clearSelection()
        else:
            self.ui.regionTableView.selectRow([r.label for r in self.logic.session.regions].index(label))
            self.logic.goToRegion(label)
        self.updateReviewButtons()

    def onAccept(self):
        with slicer.util.tryWithErrorDisplay(_("Could not save the review."), waitCursor=True):
            self.logic.acceptRegion(self.currentRegion)
        self.onNext()

    def onCorrect(self):
        with slicer.util.tryWithErrorDisplay(_("Could not open the region for correction."), waitCursor=True):
            editorNode = self.segmentEditorNode()
            self.segmentEditorWidget.setMRMLSegmentEditorNode(editorNode)
            self.segmentEditorWidget.setSegmentationNode(self.logic.results.segmentation)
            self.segmentEditorWidget.setSourceVolumeNode(self.logic.reference)
            # after the widget has its nodes: it would reset the selected segment and mask otherwise
            self.logic.beginCorrection(self.currentRegion, editorNode)
            self.segmentEditorWidget.setActiveEffectByName("Paint")
        self.updateReviewButtons()

    def onSaveCorrection(self):
        with slicer.util.tryWithErrorDisplay(_("Could not save the correction."), waitCursor=True):
            self.segmentEditorWidget.setActiveEffect(None)
            self.logic.saveCorrection(self.currentRegion)
        self.showReviewState()
        self.onNext()

    def onLeaveCorrection(self):
        self.segmentEditorWidget.setActiveEffect(None)
        self.logic.leaveCorrection()
        self.updateReviewButtons()

    def onNext(self):
        if self.logic.session is None:
            return
        self.selectRegion(self.logic.session.next_pending(self.currentRegion))
        self.ui.remainingRiskLabel.text = self.logic.reviewText()

    def segmentEditorNode(self):
        node = slicer.mrmlScene.GetSingletonNode("SegUncertainty", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("SegUncertainty")
            node = slicer.mrmlScene.AddNode(node)
        return node


class SegUncertaintyLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable without the GUI (scripts, the self-test).

    State of the current case: ``reference`` (the input volume node), ``workFolder`` (input, outputs
    and review session), ``results`` (:class:`SegUncertaintyLib.mrml.results.ResultNodes`),
    ``session`` (:class:`SegUncertaintyLib.review.session.ReviewSession`) and ``editArea`` (the
    edit-area segment while a region is being corrected).
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.reset()

    def reset(self):
        self.reference = None
        self.workFolder = None
        self.results = None
        self.session = None
        self.editArea = None

    def getParameterNode(self):
        return SegUncertaintyParameterNode(super().getParameterNode())

    @staticmethod
    def bundledModels():
        from SegUncertaintyLib.resources import bundled_models

        return sorted(bundled_models())

    # Dependencies

    @staticmethod
    def requirementsPath():
        return os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")

    def missingDependencies(self):
        """Import names of the packages the engine needs that Slicer's Python lacks (torch included)."""
        modules = {"torch": "torch", "numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK"}
        modules.update({"monai": "monai", "safetensors": "safetensors"})
        return [name for name, module in modules.items() if importlib.util.find_spec(module) is None]

    def ensureDependencies(self):
        """Install what is missing, with the user's consent: PyTorch through the PyTorch extension, the rest with pip.

        Raises:
            RuntimeError: the user declined, or an installation failed (the message says what to do).
        """
        if importlib.util.find_spec("torch") is None:
            self.installTorch()
        requirements = self.requirementsPath()
        if hasattr(slicer, "packaging"):  # Slicer >= 5.11: checks versions, asks, offers a restart
            slicer.packaging.pip_ensure(slicer.packaging.load_requirements(requirements), requester="SegUncertainty")
            return
        missing = [name for name in self.missingDependencies() if name != "torch"]
        if not missing:
            return
        question = _("SegUncertainty needs these Python packages, which will be installed now: {names}")
        if not slicer.util.confirmOkCancelDisplay(
            question.format(names=", ".join(missing)),
            windowTitle=_("Install Python packages"),
        ):
            raise RuntimeError(_("The packages SegUncertainty needs were not installed."))
        slicer.util.pip_install(["-r", requirements])

    @staticmethod
    def installTorch():
        """PyTorch through the PyTorch extension (it picks the build for the GPU), else from PyPI after asking."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            question = _(
                "SegUncertainty needs PyTorch. The 'PyTorch' extension (Extensions Manager) installs the build that "
                "suits your GPU; without it, install PyTorch from PyPI now (CPU build on most systems)?"
            )
            if not slicer.util.confirmOkCancelDisplay(question, windowTitle=_("Install PyTorch")):
                raise RuntimeError(_("PyTorch was not installed; it is needed to run the model.")) from None
            slicer.util.pip_install(f"torch{TORCH_REQUIREMENT}")
            return
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise RuntimeError(_("PyTorch was not installed; it is needed to run the model."))

    # Running the model

    @staticmethod
    def pythonExecutable():
        """Slicer's Python launcher (it sets up the environment the engine runs in)."""
        return shutil.which("PythonSlicer") or sys.executable

    def newWorkFolder(self, volumeNode):
        """A new folder for one run on this volume, under the user's Slicer documents (kept: it holds the review)."""
        base = Path(slicer.app.defaultScenePath) / "SegUncertainty"
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", volumeNode.GetName()).strip("_") or "volume"
        folder = base / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    def startPrediction(self, volumeNode, model="lidc-nodule", uncertainty="auto", fragility=True, device="auto"):
        """Write the volume to a new work folder and start ``seguncertainty predict`` on it; returns the process."""
        from SegUncertaintyLib.child_process import PredictProcess, predict_arguments
        from SegUncertaintyLib.model.package import REPLAY_FILE, load_package
        from SegUncertaintyLib.mrml.nodes import write_node

        package = load_package(model or None)  # a wrong model is reported now, not after the volume is written
        if fragility and REPLAY_FILE not in package.card.files:
            raise RuntimeError(
                _(
                    "Model {name} has no replay set, which the fragility search needs: uncheck 'Fragile voxels', "
                    "or add one with 'seguncertainty prepare-replay'."
                ).format(name=package.card.name)
            )
        self.leaveCorrection()
        self.reset()
        self.reference = volumeNode
        self.workFolder = self.newWorkFolder(volumeNode)
        inputPath = write_node(volumeNode, self.workFolder / "input.nrrd")
        arguments = predict_arguments(
            inputPath, self.workFolder / "outputs", model or None, uncertainty, fragility, device
        )
        process = PredictProcess(["predict", *arguments], python=self.pythonExecutable())
        process.start()
        return process

    def loadResults(self, volumeNode, workFolder=None):
        """Load a finished run's outputs onto ``volumeNode`` and open (or reopen) its review session."""
        from SegUncertaintyLib.mrml import review
        from SegUncertaintyLib.mrml.results import load_results

        self.reference = volumeNode
        self.workFolder = Path(workFolder or self.workFolder)
        self.results = load_results(slicer.mrmlScene, self.workFolder / "outputs", volumeNode)
        self.session = review.open_session(self.results, self.workFolder / "review")
        return self.results

    def process(self, volumeNode, model="lidc-nodule", uncertainty="auto", fragility=True, device="auto", timeout=600):
        """Run and load in one blocking call (scripts and tests); returns the result nodes.

        Raises:
            RuntimeError: the run failed (with the command's message).
        """
        process = self.startPrediction(volumeNode, model, uncertainty, fragility, device)
        process.wait(timeout)
        failure = process.failure_message()
        if failure is not None:
            raise RuntimeError(failure)
        return self.loadResults(volumeNode)

    # Display

    def setHeatmapDisplay(self, opacity, threshold):
        from SegUncertaintyLib.mrml import display

        display.set_heatmap_threshold(self.results.heatmap, threshold)
        display.set_layers(slicer.mrmlScene, foreground_opacity=opacity)

    def volumesText(self):
        lines = []
        for row in self.results.volumes:
            low, high = row["volume_interval_ml"]
            lines.append(
                _("{name}: {volume:.2f} mL (interval {low:.2f} to {high:.2f} mL)").format(
                    name=row["name"], volume=row["volume_ml"], low=low, high=high
                )
            )
        quality = self.results.summary.get("quality")
        if quality:
            verdict = _("needs review") if quality["needs_review"] else _("likely acceptable")
            lines.append(
                _("Estimated Dice {dice:.2f} ({verdict}; estimated without ground truth)").format(
                    dice=quality["estimated_dice"], verdict=verdict
                )
            )
        return "\n".join(lines)

    def reviewText(self):
        if not self.session.regions:
            return _("No high-risk region: nothing to review.")
        reviewed = sum(1 for s in self.session.status.values() if s != "pending")
        return _("{reviewed} of {count} regions reviewed; {remaining:.0%} of the expected errors remain.").format(
            reviewed=reviewed, count=len(self.session.regions), remaining=self.session.remaining_risk()
        )

    # Review

    def goToRegion(self, label):
        from SegUncertaintyLib.mrml import review

        return review.go_to_region(self.results, self.session, label)

    def acceptRegion(self, label):
        from SegUncertaintyLib.mrml import review

        review.accept_region(self.results, self.session, label)

    def beginCorrection(self, label, editorNode):
        from SegUncertaintyLib.mrml import review

        self.leaveCorrection()
        self.editArea = review.begin_correction(self.results, self.session, label, self.reference, editorNode)

    def saveCorrection(self, label):
        from SegUncertaintyLib.mrml import review

        path = review.save_correction(self.results, self.session, label, self.reference, self.editArea)
        self.editArea = None
        return path

    def leaveCorrection(self):
        from SegUncertaintyLib.mrml import review

        if self.editArea is not None and self.results is not None:
            review.end_correction(self.results, self.editArea)
        self.editArea = None


class SegUncertaintyTest(ScriptedLoadableModuleTest):
    """Runs the bundled model on the sample volume and checks the nodes and the review (about a minute on CPU)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_data()
        self.setUp()
        self.test_segment_and_review()

    def test_sample_data(self):
        import SampleData

        registerSampleData()
        volume = SampleData.SampleDataLogic().downloadSample(SAMPLE_NAME)
        self.assertEqual(slicer.util.arrayFromVolume(volume).shape, (56, 100, 100))
        self.delayDisplay("Sample volume loaded")

    def test_segment_and_review(self):
        import SampleData

        from SegUncertaintyLib.mrml.display import INFERNO_ID
        from SegUncertaintyLib.review.session import SESSION_FILE

        logic = SegUncertaintyLogic()
        missing = logic.missingDependencies()
        if missing:
            self.delayDisplay(f"Skipped: install {', '.join(missing)} first (press Apply once in the module)")
            return
        registerSampleData()
        volume = SampleData.SampleDataLogic().downloadSample(SAMPLE_NAME)
        self.delayDisplay("Segmenting the sample volume")
        results = logic.process(volume, fragility=True, device="cpu")

        nodule = slicer.util.arrayFromSegmentBinaryLabelmap(results.segmentation, results.segment_ids[1], volume)
        self.assertGreater(int(nodule.sum()), 1000)
        self.assertIsNotNone(results.fragile_segment_id)
        risk = slicer.util.arrayFromVolume(results.heatmap)
        self.assertEqual(risk.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertTrue(0.0 <= risk.min() and risk.max() <= 1.0)
        composite = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        self.assertEqual(composite.GetForegroundVolumeID(), results.heatmap.GetID())
        self.assertEqual(composite.GetBackgroundVolumeID(), volume.GetID())
        self.assertEqual(results.heatmap.GetDisplayNode().GetColorNodeID(), INFERNO_ID)
        self.assertEqual(results.region_table.GetNumberOfRows(), len(results.regions))
        self.assertGreater(len(results.regions), 0)

        first = results.regions[0].label
        logic.goToRegion(first)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        logic.beginCorrection(first, editorNode)
        self.assertEqual(editorNode.GetMaskSegmentID(), logic.editArea)
        path = logic.saveCorrection(first)
        self.assertTrue(path.exists())
        self.assertEqual(logic.session.status[first], "corrected")
        self.assertTrue((logic.workFolder / "review" / SESSION_FILE).exists())
        self.delayDisplay("Test passed")
