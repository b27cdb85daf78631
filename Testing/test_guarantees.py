"""The guarantees of a real prediction: the regions hold what the curve was fitted on, predict states
the guarantee the bundled card gives (or why there is none), and the report and summary say it."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from SegUncertaintyLib.conformal import RiskCurve
from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.errors import InputError, ModelError
from SegUncertaintyLib.guarantees import (
    RISK_THRESHOLDS,
    ReviewSettings,
    case_losses,
    conformal_half,
    guarantee_record,
    review_sentence,
)
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predict_folder import PredictFolder, review_regions
from SegUncertaintyLib.prediction import best_probabilities, risk_map
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.review.regions import DEFAULT_THRESHOLD
from SegUncertaintyLib.segwithu.package import load_head

from .helpers import package_with_section, run_quietly


@pytest.fixture(scope="module")
def demo_prediction(bundled_package):
    """The bundled model's prediction of the demo nodule, with its head maps."""
    volume = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    return predict_volume(volume, bundled_package, head=load_head(bundled_package), device="cpu")


def _guaranteed(package, alpha: float) -> float:
    return RiskCurve.from_dict(package.card.guarantees.review).control(alpha).threshold


def test_the_regions_hold_exactly_the_voxels_whose_risk_reaches_the_threshold(bundled_package, demo_prediction):
    # the review curve counts the errors below the threshold as unreviewed: the regions must hold
    # every voxel at or above it, or the guarantee would not be about what the reviewer sees
    _, risk = risk_map(demo_prediction)
    for threshold in (_guaranteed(bundled_package, 0.1), _guaranteed(bundled_package, 0.2), 0.1, 0.5):
        labels, record = review_regions(demo_prediction, threshold)
        np.testing.assert_array_equal(labels > 0, risk >= threshold)
        assert sum(r["voxels"] for r in record["regions"]) == np.count_nonzero(risk >= threshold)
    fragile = np.zeros(risk.shape, bool)
    fragile[0, 0, :5] = True  # far from the nodule, where the risk is low
    with_fragile = dataclasses.replace(demo_prediction, maps={**demo_prediction.maps, "fragile": fragile})
    labels, _ = review_regions(with_fragile, 0.5)
    np.testing.assert_array_equal(labels > 0, (risk >= 0.5) | fragile)  # the search only adds to the review


def test_a_cases_loss_curves_are_the_shares_below_each_threshold(demo_prediction):
    raters = read_volume(sample_path("lidc-nodule-demo-raters.nrrd")).array
    reference = (raters >= 2).astype(np.uint8)  # the raters' majority
    missed_errors, missed_structure = case_losses(demo_prediction, reference)
    assert missed_errors.shape == missed_structure.shape == RISK_THRESHOLDS.shape
    _, risk = risk_map(demo_prediction)
    wrong = demo_prediction.labels != reference
    foreground = 1.0 - best_probabilities(demo_prediction)[0]
    for j in (0, 40, 80, 120):
        t = RISK_THRESHOLDS[j]
        assert missed_errors[j] == pytest.approx((risk[wrong] < t).mean())
        assert missed_structure[j] == pytest.approx((foreground[reference > 0] < t).mean())
    assert np.all(np.diff(missed_errors) >= 0) and missed_errors[-1] <= 1.0
    assert 0 < missed_errors[60] < 1  # a real case: some errors are flagged at 0.03, not all


def test_the_halves_split_patients_not_cases_and_do_not_depend_on_order():
    patients = [f"P{i % 7}" for i in range(30)]
    half = conformal_half(patients)
    for p in set(patients):  # a patient's cases are all on one side
        assert len({bool(h) for h, q in zip(half, patients, strict=True) if q == p}) == 1
    assert len({p for h, p in zip(half, patients, strict=True) if h}) == 3  # 7 // 2 patients
    order = np.random.default_rng(1).permutation(30)
    np.testing.assert_array_equal(conformal_half([patients[i] for i in order]), half[order])


def test_predict_states_the_guarantee_the_card_gives_and_the_report_says_it(bundled_package, tmp_path):
    out = tmp_path / "out"
    demo = sample_path("lidc-nodule-demo.nrrd")
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(out), "--report") == 0
    folder = PredictFolder.read(out)
    review = folder.summary.guarantees["review"]
    regions = json.loads((out / "regions.json").read_text())
    guaranteed = _guaranteed(bundled_package, 0.1)
    assert regions["threshold"] == guaranteed and review["threshold"] == pytest.approx(guaranteed, abs=1e-6)
    assert review["available"] and review["alpha"] == 0.1
    assert review["calibration_cases"] == bundled_package.card.guarantees.review["cases"] > 50
    assert review["regions"] == len(regions["regions"]) >= 1
    assert review["volume_ml"] == pytest.approx(sum(r["volume_ml"] for r in regions["regions"]), abs=1e-4)
    structure = folder.summary.guarantees["structure"]
    assert structure["threshold"] == pytest.approx(
        RiskCurve.from_dict(bundled_package.card.guarantees.structure).control(0.1).threshold, abs=1e-6
    )
    page = (out / "report.html").read_text()
    assert review_sentence(review) in page and review_sentence(review).startswith("Review this")
    assert f"alpha 0.1: regions drawn where the estimated probability of error is at least {guaranteed:.3g}" in page
    assert "90 % conformal interval" in page
    quality = folder.summary.quality
    low, high = quality.volume_forecast_ml["interval_90_conformal"]
    assert low < quality.volume_forecast_ml["mean"] < high
    assert quality.review_bound == {"delta": 0.05, "epsilon": 0.1, "calibration_cases": 211}

    # a larger alpha: a higher threshold, never more to review
    looser = tmp_path / "looser"
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(looser), "--alpha", "0.2") == 0
    relaxed = PredictFolder.read(looser).summary.guarantees["review"]
    assert relaxed["threshold"] > review["threshold"] and relaxed["volume_ml"] <= review["volume_ml"]


def test_without_a_guarantee_predict_says_why_instead_of_a_number(bundled_package, tmp_path):
    demo = sample_path("lidc-nodule-demo.nrrd")
    chosen = tmp_path / "chosen"
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(chosen), "--region-threshold", "0.1") == 0
    review = PredictFolder.read(chosen).summary.guarantees["review"]
    assert not review["available"] and "drawn at 0.1, not at the guaranteed" in review["reason"]
    assert json.loads((chosen / "regions.json").read_text())["threshold"] == 0.1
    strict = tmp_path / "strict"  # 1 / (86 + 1) > 0.005: the calibration set cannot promise it
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(strict), "--alpha", "0.005") == 0
    review = PredictFolder.read(strict).summary.guarantees["review"]
    assert review == {
        "available": False,
        "alpha": 0.005,
        "reason": "86 calibration cases cannot guarantee alpha = 0.005",
    }
    assert review_sentence(review) == "No review guarantee: 86 calibration cases cannot guarantee alpha = 0.005."
    assert "structure" not in PredictFolder.read(strict).summary.guarantees
    assert json.loads((strict / "regions.json").read_text())["threshold"] == DEFAULT_THRESHOLD
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(tmp_path / "bad"), "--alpha", "1.5") == 1
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_the_review_sentence_follows_the_regions_left_to_review():
    review = {"available": True, "alpha": 0.1, "calibration_cases": 86, "regions": 3, "volume_ml": 1.5}
    assert review_sentence(review) == (
        "Review these 3 regions (1.50 mL) to leave at most 10% of the errors unreviewed "
        "(on average; guarantee from 86 calibration cases)."
    )
    left = [SimpleNamespace(volume_ml=0.25), SimpleNamespace(volume_ml=0.5)]
    assert review_sentence(review, left).startswith("Review these remaining 2 regions (0.75 mL) to leave at most 10%")
    assert review_sentence(review, left[:1]).startswith("Review this remaining 1 region (0.25 mL)")
    assert review_sentence(review, []).startswith("Every flagged region is reviewed: on average at most 10%")


def test_a_package_without_calibration_cases_has_no_guarantee(bundled_package, demo_prediction):
    assert load_package("deepbet").card.guarantees is None  # three subjects: nothing to fit on
    bare = dataclasses.replace(bundled_package, card=dataclasses.replace(bundled_package.card, guarantees=None))
    assert ReviewSettings().resolve(bare, demo_prediction) == DEFAULT_THRESHOLD
    record = guarantee_record(bare, demo_prediction, 0.1, DEFAULT_THRESHOLD, [])
    reason = "model 'lidc-nodule' has no calibration set for a guarantee"
    assert record == {"review": {"available": False, "alpha": 0.1, "reason": reason}}
    msp = dataclasses.replace(demo_prediction, maps={})  # regions from 1 - max p: not what the curve was fitted on
    record = guarantee_record(bundled_package, msp, 0.1, DEFAULT_THRESHOLD, [])
    assert "holds for regions drawn from error_probability" in record["review"]["reason"]
    assert "structure" not in record  # fitted on the head's probabilities, not on these
    assert "structure" in guarantee_record(bundled_package, demo_prediction, 0.1, DEFAULT_THRESHOLD, [])
    with pytest.raises(InputError, match="alpha"):
        ReviewSettings(alpha=0.0)


@pytest.mark.parametrize(
    "change",
    [
        lambda g: g["review"].pop("cases"),
        lambda g: g["structure"]["mean_loss"].pop(),
        lambda g: g.update(unknown=1),
        lambda g: g["triage"].pop("accept_from"),
    ],
)
def test_a_malformed_guarantees_section_is_refused(bundled_package, tmp_path, change):
    package_with_section(bundled_package, tmp_path / "model", "guarantees", change)
    with pytest.raises(ModelError, match="guarantees"):
        load_package(tmp_path / "model")


def test_the_structure_guarantee_is_mapie_s_conformal_risk_control_of_the_recall(lidc_cache, bundled_package):
    # the outline p >= t that misses at most alpha of the structure is conformal risk control of the
    # recall: the same threshold as MAPIE's semantic-segmentation controller (CRC, recall) on real predictions
    from mapie.risk_control import SemanticSegmentationController

    predictor = Predictor(bundled_package, "cpu")
    cases = [*load_dataset_cases("lidc", "calibration", lidc_cache), *load_dataset_cases("lidc", "test", lidc_cache)]
    foregrounds, references, curves = [], [], []
    for case in cases:
        prediction = predictor.predict(case.volume, "segwithu")
        foregrounds.append((1.0 - best_probabilities(prediction)[0]).ravel())
        references.append(case.majority.ravel() > 0)
        curves.append(case_losses(prediction, case.majority.astype(np.uint8))[1])
    size = max(f.size for f in foregrounds)  # one array for MAPIE: pad with voxels no one marks or predicts
    scores = np.stack([np.pad(f, (0, size - f.size)) for f in foregrounds])
    marked = np.stack([np.pad(r, (0, size - r.size)) for r in references])
    curve = RiskCurve.fit(np.stack(curves), RISK_THRESHOLDS)
    for alpha in (0.2, 0.3, 0.5):  # six cases: 1 / 7 of the risk is the finite-sample correction
        controller = SemanticSegmentationController(
            predict_function=lambda x: x, risk="recall", target_level=1 - alpha, predict_params=RISK_THRESHOLDS
        )
        controller.calibrate(scores, marked)
        assert curve.control(alpha).threshold == pytest.approx(float(controller.best_predict_param[0]), rel=1e-12)
    assert len({curve.control(alpha).threshold for alpha in (0.2, 0.3, 0.5)}) == 3  # not one threshold thrice
