"""The module's own Logic class, run on Slicer's real MRML (slicer-core) with only the Qt application stubbed.

``SegUncertainty.py`` imports ``qt`` and Slicer's scripted-module base classes, which need the
running application. They are replaced here by minimal stand-ins (base classes without behaviour,
an identity parameter-node decorator, ``slicer.app`` with a documents folder); everything the Logic
does (write the volume, run the command in a child process, load the outputs, review) runs for real.
"""

import importlib.util
import json
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.resources import sample_path

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (dev extra) provides MRML")

from SegUncertaintyLib.mrml import headless, nodes  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[1] / "SegUncertainty" / "SegUncertainty.py"


class _Base:
    def __init__(self, *args, **kwargs):
        pass


def _stand_ins() -> dict[str, types.ModuleType]:
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = scripted.ScriptedLoadableModuleLogic = _Base
    scripted.ScriptedLoadableModuleWidget = _Base
    scripted.ScriptedLoadableModuleTest = unittest.TestCase
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.WithinRange = lambda *args: None
    return {
        "qt": types.ModuleType("qt"),
        "slicer.ScriptedLoadableModule": scripted,
        "slicer.i18n": i18n,
        "slicer.parameterNodeWrapper": wrapper,
    }


@pytest.fixture
def module(monkeypatch, tmp_path):
    for name, stand_in in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    monkeypatch.setattr(
        slicer, "app", types.SimpleNamespace(defaultScenePath=str(tmp_path / "Documents")), raising=False
    )
    spec = importlib.util.spec_from_file_location("SegUncertainty", MODULE_FILE)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


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
    with pytest.raises(RuntimeError, match="Model deepbet has no replay set"):
        logic.process(volume, model="deepbet", fragility=True, device="cpu")
    assert not (tmp_path / "Documents").exists()  # refused before any work folder was made
