"""Is this scan what the model was made for? Real foreign scans are flagged, the model's own kind is not."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from SegUncertaintyLib.applicability import ALPHA, assess, fit_section, novelty_tap
from SegUncertaintyLib.cli import main
from SegUncertaintyLib.errors import DataError
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import geometry_of, read_volume, to_sitk, write_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry, Volume

from .helpers import predict_args

DEMO = sample_path("lidc-nodule-demo.nrrd")
HEAD_MRI = sample_path("itk-t1-head.nii.gz")


@pytest.fixture(scope="module")
def head_mri(tmp_path_factory):
    """A real T1 MRI (the bundled ITK head) cut to 64 x 64 x 24 voxels of 2 x 2 x 3 mm: quick through the CT model."""
    head = read_volume(HEAD_MRI)
    box = (slice(19, 43), slice(32, 96), slice(32, 96))
    path = tmp_path_factory.mktemp("mri") / "head.nii.gz"
    return write_volume(head.array[box], head.geometry.cropped(box), path)


def predict_summary(capsys, source, out):
    assert main(predict_args(source, out, progress="none")) == 0, capsys.readouterr().err
    return json.loads((out / "summary.json").read_text())


def test_the_models_own_kind_of_scan_is_within(capsys, tmp_path):
    summary = predict_summary(capsys, DEMO, tmp_path / "demo")
    verdict = summary["applicability"]
    assert verdict["within"] and verdict["reasons"] == [] and verdict["novelty"] <= verdict["threshold"]


def test_the_verdict_does_not_depend_on_how_the_scan_is_stored():
    package = load_package("lidc-nodule")
    network = load_backbone(package)
    whole = read_volume(DEMO)
    box = (slice(8, 48), slice(None), slice(None))  # 50 x 70 x 70 mm: the fields of view differ by axis
    demo = Volume(whole.array[box], whole.geometry.cropped(box))
    image = sitk.Flip(sitk.PermuteAxes(to_sitk(demo.array, demo.geometry), [2, 0, 1]), [True, False, True])
    stored = Volume(sitk.GetArrayFromImage(image), geometry_of(image))
    verdicts = []
    for volume in (demo, stored):
        prediction = predict_volume(volume, package, network=network, device="cpu", taps=[novelty_tap(package)])
        verdicts.append(assess(volume, prediction, package))
    assert verdicts[0]["within"] and verdicts[1]["within"]
    # the same fields of view and features; only the intensity quantiles' every-second-voxel sample differs
    assert verdicts[1]["novelty"] == pytest.approx(verdicts[0]["novelty"], rel=0.01)


def test_a_real_head_mri_through_the_ct_model_is_outside_and_needs_review(capsys, tmp_path, head_mri):
    summary = predict_summary(capsys, head_mri, tmp_path / "mri")
    verdict = summary["applicability"]
    assert not verdict["within"] and summary["quality"]["needs_review"]
    assert any("CT in Hounsfield units" in r for r in verdict["reasons"])


def test_a_real_brain_mri_and_a_noise_volume_are_outside(capsys, tmp_path):
    from nilearn import datasets

    mni = tmp_path / "mni152.nii.gz"
    image = datasets.load_mni152_template(resolution=2)
    image.slicer[30:70, 40:80, 30:60].to_filename(str(mni))  # a 40 x 40 x 30 block of the real template
    assert not predict_summary(capsys, mni, tmp_path / "mni")["applicability"]["within"]
    # lung-like values everywhere, but no anatomy: only the novelty score can tell
    rng = np.random.default_rng(0)
    noise = rng.normal(-700, 300, (48, 48, 48)).astype(np.float32)
    grid = Geometry((48, 48, 48), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    source = write_volume(noise, grid, tmp_path / "noise.nrrd")
    verdict = predict_summary(capsys, source, tmp_path / "noise")["applicability"]
    assert not verdict["within"] and verdict["novelty"] > verdict["threshold"]
    assert any("unlike the scans" in r for r in verdict["reasons"])


def test_the_card_rules_without_a_fitted_section():
    """deepbet (no applicability section): a CT is refused by modality, thick slices by the resampling rule."""
    brain = load_package("deepbet")
    demo = read_volume(DEMO)
    verdict = assess(demo, None, brain)
    assert not verdict["within"] and "a CT?" in verdict["reasons"][0]
    head = read_volume(HEAD_MRI)
    assert assess(head, None, brain) == {"within": True, "reasons": []}
    thick = Volume(head.array, Geometry(head.geometry.shape, (1.0, 1.0, 6.0), (0, 0, 0), head.geometry.direction))
    assert any("6 mm along axis k" in r for r in assess(thick, None, brain)["reasons"])


def test_the_conformal_threshold_keeps_false_alarms_near_alpha():
    rng = np.random.default_rng(1)
    cov = np.diag(np.linspace(0.5, 2.0, 6))
    reference = rng.multivariate_normal(np.zeros(6), cov, size=400)
    section = fit_section(reference, [f"x{i}" for i in range(6)], tap=None, alpha=0.05)
    assert section["fitted_scans"] == 200 and section["threshold_scans"] == 200
    fresh = rng.multivariate_normal(np.zeros(6), cov, size=4000)
    from SegUncertaintyLib.applicability import novelty

    alarms = np.mean([novelty(x, section)[0] > section["threshold"] for x in fresh])
    assert 0.02 < alarms < 0.09  # the guarantee is <= alpha on average over reference draws
    far, furthest = novelty(np.full(6, 10.0), section)
    assert far > section["threshold"] and furthest
    with pytest.raises(DataError, match="too few"):
        fit_section(reference[:10], ["x"] * 6, tap=None)
    with pytest.raises(DataError, match="between 0 and 1"):
        fit_section(reference, ["x"] * 6, tap=None, alpha=2.0)
    assert ALPHA == 0.02 and math.isfinite(section["threshold"])


def test_the_report_and_the_worklist_put_a_foreign_scan_first_and_never_call_it_acceptable(capsys, tmp_path, head_mri):
    import csv
    import shutil

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(DEMO, inputs / "chest.nrrd")
    shutil.copy(head_mri, inputs / "head.nii.gz")
    out = tmp_path / "triage"
    assert (
        main(["triage", "--input-dir", str(inputs), "--output-dir", str(out), "--device", "cpu", "--progress", "none"])
        == 0
    )
    rows = list(csv.DictReader((out / "worklist.csv").open(encoding="utf-8")))
    assert [r["case"] for r in rows] == ["head", "chest"] and rows[0]["outside"] == "True"
    assert "Hounsfield" in rows[0]["outside_reasons"] and rows[1]["outside"] == "False"
    page = (out / "worklist.html").read_text(encoding="utf-8")
    assert "outside what the model was trained on" in page
    report = (out / "cases" / "head" / "report.html").read_text(encoding="utf-8")
    assert "outside what this model was trained on" in report and "likely acceptable" not in report
