"""The real SegUncertaintyWidget along a reviewer's path, on strict fakes of Slicer's GUI and Slicer's real MRML.

Only what cannot run here is faked (Qt's widgets, the application, the parameter node wrapper),
strictly and from Slicer's source (Testing/slicer_fakes). The engine runs for real in a child
process started through a PythonSlicer-like launcher that spawns the interpreter as its own child,
as Slicer's does, so that Cancel must reach the whole process tree.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.resources import bundled_models, sample_path
from SegUncertaintyLib.review.session import SESSION_FILE
from SegUncertaintyLib.workfolders import new_run_folder

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (dev extra) provides MRML")

from SegUncertaintyLib.mrml import headless, nodes  # noqa: E402

from .launcher import interpreter_pids, is_gone, make_launcher  # noqa: E402
from .slicer_fakes import application, parameter_node, user  # noqa: E402
from .slicer_fakes.widgets import QFileDialog  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[1] / "SegUncertainty" / "SegUncertainty.py"
UI_FILE = MODULE_FILE.parent / "Resources" / "UI" / "SegUncertainty.ui"


@pytest.fixture
def slicer_app(monkeypatch, tmp_path):
    """(module, recorder, scene, PID file): the module loaded into the faked application on a real scene."""
    scene = headless.new_scene()
    recorder = application.install(monkeypatch, MODULE_FILE, tmp_path / "Documents", tmp_path / "tmp")
    launcher, pid_file = make_launcher(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{launcher.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LAUNCHER_CHILD_PID_FILE", str(pid_file))
    yield application.load_module(MODULE_FILE), recorder, scene, pid_file
    application.shut_down(recorder)


def run_folders(tmp_path: Path) -> list[Path]:
    base = tmp_path / "Documents" / "SegUncertainty"
    return sorted(p for p in base.iterdir()) if base.exists() else []


def test_every_bound_parameter_has_a_connector_in_slicer(slicer_app):
    """The .ui's widget class and the parameter's type are a pair Slicer's parameterNodeWrapper can bind."""
    module = slicer_app[0]
    parameters = module.SegUncertaintyParameterNode.allParameters
    root = ElementTree.parse(UI_FILE).getroot()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == parameter_node.PARAMETER_NAME_PROPERTY:
                bound[prop.findtext("string")] = widget.get("class")
    assert bound and set(bound) <= set(parameters)
    for name, widget_class in bound.items():
        assert parameter_node.binding_problem(widget_class, parameters[name].datatype) is None, name
    # the one free value is shown by the widget itself (Slicer's combo-box connector needs a fixed Choice)
    assert set(parameters) - set(bound) == {"model"}
    assert parameter_node.binding_problem("QComboBox", str) is not None
    # the rules bite: what the panel had before
    assert "requires the Choice annotation" in parameter_node.binding_problem("QComboBox", parameters["model"].datatype)
    assert "unbounded" in parameter_node.binding_problem("ctkSliderWidget", float)
    assert parameter_node.binding_problem("qMRMLNodeComboBox", slicer.vtkMRMLScalarVolumeNode | None) is None


def test_the_reviewers_path(slicer_app, tmp_path):
    module, recorder, scene, pid_file = slicer_app
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    other = nodes.add_volume(scene, demo.array, demo.geometry, "first volume")
    # two nodules (the demo's and its mirror image side by side): two regions or more to review
    two = np.concatenate([demo.array, demo.array[:, :, ::-1]], axis=2)
    grid = dataclasses.replace(demo.geometry, shape=two.shape)
    volume = nodes.add_volume(scene, two, grid, "chest CT")

    # 1. open the module: every bound widget shows its parameter
    widget, panel = application.open_module(module)
    ui = widget.ui
    assert ("qSlicerAbstractCoreModule", "Segmentation") in recorder.translations
    parameters = widget._parameterNode
    assert ui.inputVolumeSelector.currentNode() is other and parameters.inputVolume is other
    assert [
        ui.uncertaintyComboBox.itemText(i) for i in range(ui.uncertaintyComboBox.count)
    ] == module.UNCERTAINTY_CHOICES
    assert ui.heatmapThresholdSlider.value == pytest.approx(0.1) and ui.heatmapThresholdSlider.maximum == 1.0
    assert ui.fragilityCheckBox.checked and ui.fragilityCheckBox.enabled
    assert ui.modelComboBox.currentText == "lidc-nodule" and ui.applyButton.enabled

    # 2. choose the volume and the model; the fragility search follows what the model allows
    user.choose_node(ui.inputVolumeSelector, volume)
    assert parameters.inputVolume is volume
    user.choose(ui.modelComboBox, "deepbet")
    assert parameters.model == "deepbet" and not parameters.fragility
    assert not ui.fragilityCheckBox.checked and not ui.fragilityCheckBox.enabled
    assert "no replay set" in ui.fragilityCheckBox.toolTip
    package = bundled_models()["lidc-nodule"]
    QFileDialog._answers.append(str(package))  # Browse: the user picks a package folder
    user.click(ui.modelBrowseButton)
    assert parameters.model == str(package) and parameters.fragility and ui.fragilityCheckBox.enabled
    assert ui.modelComboBox.currentText == package.name and ui.modelComboBox.itemData(ui.modelComboBox.currentIndex)
    user.choose(ui.modelComboBox, "lidc-nodule")
    user.choose(ui.deviceComboBox, "cpu")
    assert (parameters.model, parameters.device, parameters.fragility) == ("lidc-nodule", "cpu", True)

    # 3. Apply: the engine runs in a child of the launcher and reports progress
    user.click(ui.applyButton)
    assert widget.process is not None and ui.applyButton.text == "Cancel" and ui.progressBar.visible
    user.process_events(until=lambda: widget.process.fraction >= 0.1 or widget.process.finished())
    assert not widget.process.finished(), "the run ended before it could be cancelled"
    engine = interpreter_pids(pid_file)[-1]
    assert not is_gone(engine)
    assert ui.progressBar.value > 0 and "(" in ui.statusLabel.text
    (folder,) = run_folders(tmp_path)

    # 4. cancel: the whole tree stops (it does not run to its end), nothing of the run is left
    run = widget.process
    user.click(ui.applyButton)
    assert ui.applyButton.text == "Cancelling..." and not ui.applyButton.enabled
    user.process_events(until=lambda: widget.process is None)
    assert is_gone(engine) and run.outputs is None  # never reported being done
    assert not folder.exists() and run_folders(tmp_path) == []
    assert ui.statusLabel.text.startswith("Cancelled") and ui.applyButton.text == "Apply"
    assert not [d for d in recorder.dialogs if d[0] == "error"]

    # 5. run again to the end; the display follows the sliders at once
    user.click(ui.applyButton)
    user.process_events(until=lambda: widget.process is None)
    results = widget.logic.results
    assert results is not None, recorder.dialogs
    assert ui.statusLabel.text.startswith("Done") and ui.regionTableView.mrmlTableNode() is results.region_table
    assert len(results.regions) >= 2
    user.drag(ui.heatmapThresholdSlider, 0.3)
    assert results.heatmap.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.3)
    user.drag(ui.heatmapOpacitySlider, 0.4)
    assert scene.GetNodeByID("vtkMRMLSliceCompositeNodeRed").GetForegroundOpacity() == pytest.approx(0.4)

    # 6. click a region row: the views centre on that region
    session = widget.logic.session
    user.click_table_row(ui.regionTableView, 1)
    second = session.regions[1]
    assert widget.currentRegion == second.label and ui.acceptButton.enabled
    red = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    centre = np.array([red.GetSliceToRAS().GetElement(r, 3) for r in range(3)])
    np.testing.assert_allclose(centre, second.centroid_ras, atol=1e-3)

    # 7. Accept, then Correct, Save, Next
    user.click(ui.acceptButton)
    assert session.status[second.label] == "accepted"
    first = session.regions[0]
    assert widget.currentRegion == first.label  # Next: the first region still pending
    user.click(ui.correctButton)
    editor = widget.segmentEditorWidget
    editor_node = editor.mrmlSegmentEditorNode()
    assert editor.activeEffect() == "Paint" and editor._shortcuts and ui.correctionFrame.visible
    assert editor_node.GetMaskSegmentID() == widget.logic.editArea
    user.click(ui.saveCorrectionButton)
    assert session.status[first.label] == "corrected" and session.version == 1
    assert (folder := widget.logic.workFolder / "review" / "corrections" / "segmentation_v001.nrrd").is_file()
    assert editor.activeEffect() is None and not editor._views_observed and not editor._shortcuts
    assert (
        widget.currentRegion == session.regions[2].label if len(session.regions) > 2 else widget.currentRegion is None
    )

    # 8. the head learns from the corrections, in the child process, into a copy of the model that is then chosen
    widget.logic.headTrainingOptions = ("--max-epochs", "1", "--batch-size", "2")  # a quick training
    user.click(ui.learnFromCorrectionsButton)
    assert widget.process is not None and ui.learnFromCorrectionsButton.text == "Cancel" and ui.progressBar.visible
    assert not ui.applyButton.enabled and not ui.trainHeadButton.enabled  # one run at a time
    user.process_events(until=lambda: widget.process is None)
    learned = widget.logic.trainedModel
    assert learned is not None and (learned / "head.safetensors").is_file(), recorder.dialogs
    assert parameters.model == str(learned) and ui.modelComboBox.currentText == learned.name
    assert ui.statusLabel.text.startswith("Head trained") and ui.applyButton.enabled
    assert ui.learnFromCorrectionsButton.text == "Learn from my corrections"

    # ... and on a folder of the user's scans; cancelled, it leaves no model behind
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "demo.nrrd").write_bytes(sample_path("lidc-nodule-demo.nrrd").read_bytes())
    widget.logic.headTrainingOptions = ("--max-epochs", "50", "--patience", "50")  # long enough to be cancelled
    QFileDialog._answers.append(str(scans))
    user.click(ui.trainHeadButton)
    copy = widget.logic.trainedModel
    user.process_events(until=lambda: widget.process.stage == "train" or widget.process.finished())
    assert not widget.process.finished(), "the training ended before it could be cancelled"
    user.click(ui.trainHeadButton)
    assert ui.trainHeadButton.text == "Cancelling..."
    user.process_events(until=lambda: widget.process is None)
    assert not copy.exists() and learned.exists() and ui.statusLabel.text.startswith("Cancelled")
    assert not [d for d in recorder.dialogs if d[0] == "error"]
    user.choose(ui.modelComboBox, "lidc-nodule")

    # 9. leave the module in the middle of a correction, and come back: no effect is left live
    user.click_table_row(ui.regionTableView, 0)
    user.click(ui.correctButton)
    assert editor.activeEffect() == "Paint" and editor._views_observed and editor._shortcuts
    application.leave(widget, panel)
    assert editor.activeEffect() is None and not editor._views_observed and not editor._shortcuts
    application.enter(widget, panel)
    assert editor.activeEffect() is None and not editor._views_observed

    # Clean up: earlier runs go (after saying how many hold a review), the run on screen stays
    on_screen = widget.logic.workFolder
    older = new_run_folder(on_screen.parent, "older scan")
    (older / "review").mkdir()
    (older / "review" / SESSION_FILE).write_text("{}")
    recorder.confirm_answers.append(False)  # the user says no first
    user.click(ui.cleanWorkFoldersButton)
    assert older.exists() and "Remove 1 run folders" in recorder.dialogs[-1][1]
    assert "1 of them hold a review" in recorder.dialogs[-1][1]
    user.click(ui.cleanWorkFoldersButton)
    assert not older.exists() and run_folders(tmp_path) == [on_screen]

    # 10. close the scene during a run: the run stops and leaves nothing; the panel is empty again
    kept, started = run_folders(tmp_path), len(interpreter_pids(pid_file))
    user.click(ui.applyButton)
    user.process_events(until=lambda: len(interpreter_pids(pid_file)) == started + 1 and widget.process.fraction > 0)
    engine, run = interpreter_pids(pid_file)[-1], widget.process
    scene.Clear(0)
    user.process_events(until=lambda: widget.process is None)
    assert is_gone(engine) and run.outputs is None and run_folders(tmp_path) == kept
    assert widget.logic.results is None and ui.regionTableView.mrmlTableNode() is None
    assert "Run a segmentation" in ui.remainingRiskLabel.text
    assert not recorder.pip

    # 11. Slicer quits during a training: the model copy goes, every run folder (the one on screen too) stays
    user.choose_node(ui.inputVolumeSelector, nodes.add_volume(scene, demo.array, demo.geometry, "chest CT"))
    user.click(ui.applyButton)
    user.process_events(until=lambda: widget.process is None)
    finished = run_folders(tmp_path)
    assert widget.runFolder in finished and len(finished) == len(kept) + 1
    widget.logic.headTrainingOptions = ("--max-epochs", "50", "--patience", "50")
    user.click(ui.learnFromCorrectionsButton)
    copy = widget.logic.trainedModel
    user.process_events(until=lambda: widget.process.stage == "train" or widget.process.finished())
    widget.cleanup()
    assert not copy.exists() and run_folders(tmp_path) == finished


def test_dependencies_use_slicer_packaging_where_it_exists(slicer_app, monkeypatch):
    """Slicer >= 5.12: ``import slicer`` does not import ``slicer.packaging``; the module imports it and calls
    pip_ensure with constraints that keep what Slicer ships; a model's weights package comes without its
    dependencies."""
    module, recorder = slicer_app[0], slicer_app[1]
    calls = []
    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = lambda path: [
        line for line in Path(path).read_text().splitlines() if line[:1].isalpha()
    ]
    packaging.pip_ensure = lambda requirements, constraints=None, requester=None, **kw: calls.append(
        (requirements, Path(constraints).read_text(), requester)
    )
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    assert not hasattr(slicer, "packaging")
    logic = module.SegUncertaintyLogic()
    logic.ensureDependencies("lidc-nodule")
    ((requirements, constraints, requester),) = calls
    assert "monai>=1.3" in requirements and requester == "SegUncertainty"
    import numpy
    import torch

    assert f"numpy=={numpy.__version__}" in constraints and f"torch=={torch.__version__}" in constraints
    assert not recorder.pip  # everything is installed here

    # deepbet's weights come from its wheel, installed without its dependencies when missing
    monkeypatch.setattr("SegUncertaintyLib.dependencies.installed_version", lambda name: None)
    with pytest.raises(AssertionError, match="must not install"):
        logic.ensureDependencies("deepbet")
    assert recorder.pip[-1] == ["--no-deps", "deepbet==1.0.2"]


def test_reload_reloads_the_library(slicer_app):
    module, recorder = slicer_app[0], slicer_app[1]
    widget, _ = application.open_module(module)
    loaded = {name: m for name, m in sys.modules.items() if name.split(".")[0] == "SegUncertaintyLib"}
    assert "SegUncertaintyLib.workfolders" in loaded
    try:
        widget.onReload()
        assert recorder.reloads == ["SegUncertainty"]
        assert not [name for name in sys.modules if name.split(".")[0] == "SegUncertaintyLib"]
    finally:
        sys.modules.update(loaded)  # the other tests go on with the modules they imported


def test_a_saved_scene_with_a_search_the_model_cannot_run_opens_with_it_off(slicer_app):
    module = slicer_app[0]
    saved = module.SegUncertaintyLogic().getParameterNode()
    saved.model, saved.fragility = "deepbet", True  # as a scene saved by an older version could hold
    widget, _ = application.open_module(module)
    assert widget.ui.modelComboBox.currentText == "deepbet"
    assert not widget._parameterNode.fragility and not widget.ui.fragilityCheckBox.checked
    assert not widget.ui.fragilityCheckBox.enabled and "no replay set" in widget.ui.fragilityCheckBox.toolTip
