"""The seguncertainty command: outputs on the input grid, JSON progress, clear errors, clean cancel."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.model.package import BACKBONE_FILE, CARD_NAME
from SegUncertaintyLib.resources import sample_path

from .helpers import predict_args, rotation

DEMO = sample_path("lidc-nodule-demo.nrrd")


def run_cli(capsys, *args):
    status = main([*args])
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return status, events, captured.err


@pytest.fixture
def oblique_demo(tmp_path):
    """The demo scene on an oblique grid with anisotropic voxels, as NIfTI."""
    volume = read_volume(DEMO)
    g = volume.geometry
    direction = rotation([1.0, -0.4, 0.3], 17.0).ravel()
    geometry = type(g)(g.shape, (0.7, 0.8, 1.25), (-30.0, 12.5, 77.0), direction)
    return write_volume(volume.array, geometry, tmp_path / "oblique.nii.gz")


def test_predict_writes_outputs_on_the_exact_input_grid(capsys, tmp_path, oblique_demo):
    out = tmp_path / "out"
    status, events, _ = run_cli(capsys, *predict_args(oblique_demo, out, "--uncertainty", "none"))
    assert status == 0
    assert events[-1]["event"] == "done"
    progress = [e for e in events if e["event"] == "progress"]
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {"read", "preprocess", "inference", "resample", "write"} <= {e["stage"] for e in progress}
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "probability_nodule.nrrd",
        "regions.json",
        "regions.nrrd",
        "segmentation.nrrd",
        "summary.json",
    ]
    reference = sitk.ReadImage(str(oblique_demo))
    for name in ("segmentation.nrrd", "probability_nodule.nrrd", "regions.nrrd"):
        image = sitk.ReadImage(str(out / name))
        assert image.GetSize() == reference.GetSize()
        assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
        assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-6)
        assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nrrd")))
    nodule = summary["classes"][0]
    assert nodule["name"] == "nodule" and nodule["voxels"] == int((labels == 1).sum()) > 0
    assert nodule["volume_ml"] == pytest.approx(nodule["voxels"] * 0.7 * 0.8 * 1.25 / 1000, rel=1e-3)
    low, high = nodule["volume_interval_ml"]  # p >= 0.75 and p >= 0.5 (the label map) and p >= 0.25 nest
    assert 0 < low <= nodule["volume_ml"] <= high
    # without a head the regions come from 1 - max probability, which reaches 0.5 only on the contour
    regions = json.loads((out / "regions.json").read_text())
    assert regions["risk_map"] == "1 - max probability" and regions["labels"] == "regions.nrrd"
    region_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "regions.nrrd")))
    assert region_labels.max() == len(regions["regions"]) > 0
    assert [r["rank"] for r in regions["regions"]] == list(range(1, len(regions["regions"]) + 1))
    assert summary["timings_s"]["total"] > 0 and summary["peak_memory_mb"] > 0
    assert summary["outputs"]["probabilities"] == {"nodule": "probability_nodule.nrrd"}


@pytest.fixture
def broken_package(tmp_path, bundled_package):
    target = tmp_path / "broken-model"
    shutil.copytree(bundled_package.path, target)
    weights = target / BACKBONE_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    return target


@pytest.fixture
def two_channel_package(tmp_path, bundled_package):
    target = tmp_path / "t1-t2-model"
    shutil.copytree(bundled_package.path, target)
    card = json.loads((target / CARD_NAME).read_text())
    card["in_channels"] = 2
    (target / CARD_NAME).write_text(json.dumps(card))
    return target


def _image(tmp_path, name, array):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    return path


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda t, b, c: ([str(t / "nope.nrrd")]), "input not found"),
        (lambda t, b, c: ([str(_image(t, "flat.nrrd", np.ones((9, 9), np.float32)))]), "2D"),
        (lambda t, b, c: ([str(_image(t, "4d.nrrd", np.ones((2, 3, 4, 5), np.float32)))]), "4D"),
        (lambda t, b, c: ([str(_image(t, "zero.nrrd", np.zeros((4, 5, 6), np.float32)))]), "constant"),
        (lambda t, b, c: ([str(_image(t, "nan.nrrd", np.full((4, 5, 6), np.nan, np.float32)))]), "NaN"),
        (lambda t, b, c: ([str(DEMO), "--model", str(b)]), "is corrupted"),
        (lambda t, b, c: ([str(DEMO), "--model", str(c)]), "expects 2 input channels"),
        (lambda t, b, c: ([str(DEMO), "--model", "no-such-model"]), "neither a model package"),
    ],
)
def test_bad_input_gets_a_message_and_no_outputs(capsys, tmp_path, broken_package, two_channel_package, setup, message):
    out = tmp_path / "out"
    source, *extra = setup(tmp_path, broken_package, two_channel_package)
    status, events, err = run_cli(capsys, *predict_args(source, out, *extra))
    assert status == 1
    assert events[-1]["event"] == "error" and message in events[-1]["message"]
    assert err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()  # nothing written, not even an empty folder


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, events, err = run_cli(capsys, *predict_args(DEMO, blocker / "out"))
    assert status == 1 and "cannot write into output folder" in events[-1]["message"]
    assert "Traceback" not in err


def test_failure_during_writing_keeps_previous_outputs_intact(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(capsys, *predict_args(DEMO, out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import SegUncertaintyLib.predict_folder as predict_folder

    calls = {"n": 0}
    real_write = predict_folder.write_volume

    def failing_write(*args, **kwargs):  # the disk fills up at the second file
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(predict_folder, "write_volume", failing_write)
    status, _, err = run_cli(capsys, *predict_args(DEMO, out))
    assert status != 0 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging leftovers, nothing replaced


def test_sigterm_cancels_cleanly(tmp_path):
    # a volume large enough that inference takes a few seconds
    volume = read_volume(DEMO)
    big = np.pad(volume.array, ((0, 0), (0, 100), (0, 100)), mode="reflect")
    g = volume.geometry
    source = write_volume(big, type(g)(big.shape, g.spacing, g.origin, g.direction), tmp_path / "big.nrrd")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "SegUncertaintyLib.cli", *predict_args(source, out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    for line in process.stdout:
        event = json.loads(line)
        if event.get("stage") == "inference" or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    rest, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert json.loads(rest.strip().splitlines()[-1]) == {"event": "error", "message": "terminated"}
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_demo_command_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "SegUncertaintyLib.cli", "demo", "--output-dir", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"][0]["volume_ml"] > 0.5  # a ~17 mm nodule is several mL... at least > 0.5
    seg = read_volume(out / "segmentation.nrrd")
    assert seg.geometry == read_volume(DEMO).geometry
    assert "nodule:" in result.stderr and "mL" in result.stderr


REFUSE_WITHOUT_TORCH = """
import sys
from SegUncertaintyLib.cli import main
status = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "torch not imported", status)
"""


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["predict", "--input", "{tmp}/nope.nrrd", "--output-dir", "{tmp}/out"], "input not found"),
        (["predict", "--input", "{tmp}/notes.txt", "--output-dir", "{tmp}/out"], "is not a volume file this reads"),
        (["predict", "--input", "{tmp}", "--output-dir", "{tmp}/out"], "a folder without DICOM files"),
        (["predict", "--input", "{demo}", "--output-dir", "{tmp}/notes.txt"], "is a file, not a folder"),
        (["predict", "--input", "{demo}", "--output-dir", "{tmp}/out", "--model", "nope"], "neither a model package"),
        (["predict", "--input", "{demo}", "--output-dir", "{tmp}/out", "--fragility-steps", "3"], "need the search"),
        (["demo", "--output-dir", "{tmp}/notes.txt"], "is a file, not a folder"),
        (["triage", "--input-dir", "{tmp}/none", "--output-dir", "{tmp}/out"], "input folder not found"),
    ],
)
def test_a_wrong_input_is_refused_before_torch_is_imported(tmp_path, command, message):
    (tmp_path / "notes.txt").write_text("not a scan")
    argv = [part.format(tmp=tmp_path, demo=DEMO) for part in command]
    result = subprocess.run(
        [sys.executable, "-c", REFUSE_WITHOUT_TORCH, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert result.stdout.strip().endswith("torch not imported 1"), result.stdout + result.stderr
    assert "error: " in result.stderr and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_optional_package_is_checked_before_the_work(capsys, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    status, events, _ = run_cli(capsys, *predict_args(DEMO, tmp_path / "out", "--report"))
    assert status == 1 and "needs the matplotlib package" in events[-1]["message"]
    assert [e for e in events if e["event"] == "progress"] == []  # refused before the prediction started
    assert not (tmp_path / "out").exists()


def test_progress_none_still_prints_the_result(capsys, tmp_path):
    status, events, err = run_cli(capsys, *predict_args(DEMO, tmp_path / "out", progress="none"))
    assert status == 0 and events == []
    assert "nodule:" in err and "to look at it: seguncertainty report --run-dir" in err
    assert "total" in err and "start-up" in err and "[" not in err  # the result, no progress bar


def test_a_model_whose_weights_package_is_missing_is_refused_before_the_work(capsys, tmp_path, monkeypatch):
    from SegUncertaintyLib import preflight

    monkeypatch.setattr(preflight, "is_installed", lambda requirement: not requirement.startswith("deepbet"))
    head = sample_path("itk-t1-head.nii.gz")
    status, events, _ = run_cli(capsys, *predict_args(head, tmp_path / "out", "--model", "deepbet"))
    assert status == 1 and "pip install deepbet==" in events[-1]["message"]
    assert [e for e in events if e["event"] == "progress"] == []
