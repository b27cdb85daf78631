"""The module's own Logic class, run on Slicer's real MRML (slicer-core) in the strictly faked application.

``SegUncertainty.py`` imports ``qt`` and Slicer's scripted-module base classes, which need the
running application; Testing/slicer_fakes fakes them from Slicer's source. Everything the Logic
does (write the volume, run the command in a child process, load the outputs, review) runs for real.
"""

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from SegUncertaintyLib.guarantees import review_sentence
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.resources import sample_path

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (dev extra) provides MRML")

from SegUncertaintyLib.mrml import headless, nodes  # noqa: E402

from .slicer_fakes import application  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[1] / "SegUncertainty" / "SegUncertainty.py"


@pytest.fixture
def module(monkeypatch, tmp_path):
    recorder = application.install(monkeypatch, MODULE_FILE, tmp_path / "Documents", tmp_path / "tmp")
    yield application.load_module(MODULE_FILE)
    application.shut_down(recorder)


def test_the_logic_segments_loads_and_keeps_the_review(module, tmp_path):
    scene = headless.new_scene()
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    volume = nodes.add_volume(scene, demo.array, demo.geometry, "chest CT (demo)")
    logic = module.SegUncertaintyLogic()
    assert logic.missingDependencies() == []
    assert "lidc-nodule" in logic.bundledModels()

    results = logic.process(volume, fragility=True, device="cpu")
    folder = logic.workFolder
    assert folder.parent == tmp_path / "Documents" / "SegUncertainty" and folder.name.startswith("chest_CT_demo-")
    written = read_volume(folder / "input.nrrd")  # the node went to the command on its exact grid
    assert written.geometry.is_close(demo.geometry, atol=1e-6)
    np.testing.assert_array_equal(written.array, demo.array)
    summary = json.loads((folder / "outputs" / "summary.json").read_text())
    assert "fragility" in summary and results.fragile_segment_id is not None
    assert slicer.util.arrayFromVolume(results.heatmap).max() <= 1.0
    assert "nodule:" in logic.volumesText() and "interval" in logic.volumesText()
    assert "Estimated Dice" in logic.volumesText()  # the bundled model carries quality predictors
    assert logic.reviewText().startswith(f"0 of {len(results.regions)} regions reviewed; 100%")
    assert review_sentence(results.summary.guarantees["review"]) in logic.reviewText()
    assert "guarantee from 86 calibration cases" in logic.reviewText()

    first = logic.session.next_pending()
    assert first == results.regions[0].label
    logic.setHeatmapDisplay(0.3, 0.2)
    assert results.heatmap.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.2)
    assert scene.GetNodeByID("vtkMRMLSliceCompositeNodeRed").GetForegroundOpacity() == pytest.approx(0.3)

    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    logic.beginCorrection(first, editor)
    assert editor.GetMaskSegmentID() == logic.editArea
    logic.leaveCorrection()  # the reviewer changes their mind: nothing is recorded
    assert logic.editArea is None and logic.session.status[first] == "pending"
    logic.beginCorrection(first, editor)
    version = logic.saveCorrection(first)
    assert version == folder / "review" / "corrections" / "segmentation_v001.nrrd"
    assert logic.session.status[first] == "corrected" and logic.reviewText().startswith("1 of")
    # the guarantee follows the review: what is left to review, then that it holds
    pending = [r for r in results.regions if r.label != first]
    review = results.summary.guarantees["review"]
    assert review_sentence(review, pending) in logic.reviewText()
    assert ("remaining" in logic.reviewText()) == bool(pending)
    for region in pending:
        logic.session.accept(region.label)
    assert logic.reviewText().endswith(
        "Every flagged region is reviewed: on average at most 10% of the errors are left unreviewed "
        "(guarantee from 86 calibration cases)."
    )

    # after a restart: a new scene, the same folder; the review is where it was left
    scene = headless.new_scene()
    volume = nodes.add_volume(scene, demo.array, demo.geometry, "chest CT (demo)")
    again = module.SegUncertaintyLogic()
    again.loadResults(volume, folder)
    assert again.session.status == logic.session.status and again.session.version == 1


def test_a_failed_run_raises_the_commands_message(module, tmp_path):
    scene = headless.new_scene()
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    volume = nodes.add_volume(scene, demo.array, demo.geometry, "demo")
    logic = module.SegUncertaintyLogic()
    with pytest.raises(Exception, match="is neither a model package folder nor a bundled model"):
        logic.process(volume, model=str(tmp_path / "missing-model"), device="cpu")
    with pytest.raises(RuntimeError, match="Not available for deepbet: the model has no replay set"):
        logic.process(volume, model="deepbet", fragility=True, device="cpu")
    assert not (tmp_path / "Documents").exists()  # refused before any run folder was made


def test_run_folders_are_unique_and_a_run_past_its_time_is_stopped(module, tmp_path, monkeypatch):
    scene = headless.new_scene()
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    volume = nodes.add_volume(scene, demo.array, demo.geometry, "demo")
    logic = module.SegUncertaintyLogic()
    # two runs started within the same second get two folders
    monkeypatch.setattr(time, "strftime", lambda *args: "20261201-120000")
    first, second = (logic.startPrediction(volume, fragility=False, device="cpu") for _ in range(2))
    folders = [p for p in (tmp_path / "Documents" / "SegUncertainty").iterdir()]
    assert len(folders) == 2 and all(p.name.startswith("demo-20261201-120000-") for p in folders)
    for process in (first, second):
        process.kill()
        process.wait(30)

    # a blocking run that takes too long: its process tree is killed and its folder removed
    logic.removeRunFolders(logic.runFolders())
    started = []
    original = logic.startPrediction
    monkeypatch.setattr(logic, "startPrediction", lambda *a, **k: started.append(original(*a, **k)) or started[-1])
    with pytest.raises(RuntimeError, match="longer than 1 s and was stopped"):
        logic.process(volume, fragility=False, device="cpu", timeout=1)
    assert started[0].finished() and started[0].cancelled
    assert logic.runFolders() == [] and logic.workFolder is None
    with pytest.raises(subprocess.TimeoutExpired):  # the process API itself never kills on a timeout
        (waiting := original(volume, fragility=False, device="cpu")).wait(0.01)
    waiting.kill()
    waiting.wait(30)


def test_a_scan_the_model_was_not_made_for_is_called_so_in_the_panel(module):
    scene = headless.new_scene()
    head = read_volume(sample_path("itk-t1-head.nii.gz"))  # a T1 MRI through the CT nodule model
    box = (slice(19, 43), slice(32, 96), slice(32, 96))  # its centre: quick on the CPU
    volume = nodes.add_volume(scene, head.array[box], head.geometry.cropped(box), "T1 head")
    logic = module.SegUncertaintyLogic()
    logic.process(volume, fragility=False, device="cpu")
    text = logic.volumesText()
    assert "OUTSIDE what this model was trained on" in text and "Hounsfield" in text
    assert "needs review" in text and "likely acceptable" not in text


def test_the_model_menu_offers_the_models_installed_for_nnunet(module, tmp_path, monkeypatch):
    import shutil

    tiny = Path(__file__).parent / "data" / "nnunet-lidc-tiny" / "Dataset901_LIDCNodule"
    shutil.copytree(tiny, tmp_path / "results" / "Dataset901_LIDCNodule")
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    logic = module.SegUncertaintyLogic()
    assert logic.availableModels() == [*logic.bundledModels(), "nnunet:Dataset901_LIDCNodule"]
    assert logic.fragilityUnavailable("nnunet:Dataset901_LIDCNodule").startswith("Not available for Dataset901")


def test_the_head_learns_the_users_scans_and_corrections_in_a_copy(module, tmp_path):
    scene = headless.new_scene()
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    volume = nodes.add_volume(scene, demo.array, demo.geometry, "chest CT (demo)")
    logic = module.SegUncertaintyLogic()
    from SegUncertaintyLib.resources import bundled_models

    card_before = (bundled_models()["lidc-nodule"] / "model.json").read_bytes()
    quick = ("--max-epochs", "1", "--batch-size", "2")

    results = logic.process(volume, fragility=False, device="cpu")  # a run, and a review with one correction
    label = results.regions[0].label
    corrected = (read_volume(logic.session.current_path(), allow_constant=True).array > 0).astype(np.uint8)
    corrected[tuple(np.argwhere(corrected)[0])] = 0
    logic.session.correct(label, corrected, reviewer="test")

    learned = logic.trainHead("lidc-nodule", reviews=logic.runsFolder(), device="cpu", options=quick)
    assert learned.parent == tmp_path / "Documents" / "SegUncertaintyModels"
    assert learned.name.startswith("lidc-nodule-reviews-")
    head = json.loads((learned / "model.json").read_text())["head"]
    assert head["training"]["data"]["source"] == "review sessions"
    assert head["training"]["data"]["scans"] == [logic.workFolder.name]
    assert (bundled_models()["lidc-nodule"] / "model.json").read_bytes() == card_before  # the chosen model stays
    assert logic.availableModels()[-1] == str(learned) and logic.fragilityUnavailable(str(learned)) is None

    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "demo.nrrd").write_bytes(sample_path("lidc-nodule-demo.nrrd").read_bytes())
    own = logic.trainHead(str(learned), images=scans, device="cpu", options=quick)
    assert json.loads((own / "model.json").read_text())["head"]["training"]["data"]["source"] == "unlabelled scans"
    assert logic.availableModels()[-2:] == [str(learned), str(own)]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="no volume in"):
        logic.trainHead("lidc-nodule", images=empty, device="cpu", options=quick)
    assert sorted(logic.modelsFolder().iterdir()) == sorted([learned, own])  # a failed training leaves nothing
