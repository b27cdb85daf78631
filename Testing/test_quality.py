"""Case-level quality: features, volume forecasts, the two Dice predictors, bundling, predict's summary."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from SegUncertaintyLib.data.lidc_dataset import load_cases
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.quality.features import case_features, expected_dice, regions
from SegUncertaintyLib.quality.predictor import (
    LINEAR_FEATURES,
    NET_SHAPE,
    LinearQuality,
    fit_linear,
    fit_net,
    predict_net,
)
from SegUncertaintyLib.quality.training import (
    cross_validated_estimates,
    flag_scores,
    prediction_scores,
    rank_aggregate,
    record_of,
    review_threshold,
    score_scores,
    triage_rule,
)
from SegUncertaintyLib.quality.volume import VolumeEvidence, VolumeForecast, coverage, fit_scale, mean_crps
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.segwithu.package import load_head

from .helpers import run_quietly


@pytest.fixture(scope="module")
def predicted(lidc_cache, bundled_package):
    """Real LIDC cases (calibration and test) predicted with the bundled head, and their records."""
    head = load_head(bundled_package)
    out = []
    for split in ("calibration", "test"):
        for case in load_cases(split, lidc_cache):
            prediction = predict_volume(case.volume, bundled_package, head=head, device="cpu")
            out.append((case, prediction, record_of(case, prediction, bundled_package)))
    return out


def test_features_of_a_real_prediction(predicted):
    case, prediction, record = predicted[0]
    features = record.features
    assert set(LINEAR_FEATURES) <= set(features)
    fg, band = regions(prediction.labels)
    assert features["volume_ml"] == pytest.approx(fg.sum() * case.geometry.voxel_volume_ml)
    assert 0.0 <= features["expected_dice"] <= 1.0 and features["expected_dice_gap"] == 1 - features["expected_dice"]
    assert features["error_probability:band_mean"] == pytest.approx(prediction.maps["error_probability"][band].mean())
    assert (band & fg).any() and (band & ~fg).any()  # both sides of the outline
    assert "fragile_fraction" not in features  # no search, no feature (not a zero)
    # a perfectly sure, perfectly drawn segmentation has expected Dice 1; flipping it gives 0
    sure = np.stack([prediction.labels == 0, prediction.labels == 1]).astype(np.float32)
    assert expected_dice(sure, prediction.labels) == 1.0
    assert expected_dice(sure[::-1].copy(), prediction.labels) == 0.0
    # an empty segmentation has no band: its band means are 0, not NaN
    prediction = dataclasses.replace(prediction, labels=np.zeros_like(prediction.labels))
    empty = case_features(prediction)
    assert (
        empty["volume_ml"] == 0
        and empty["error_probability:band_mean"] == 0
        and np.isfinite(list(empty.values())).all()
    )


def test_volume_forecast_crps_coverage_and_scale():
    scoringrules = pytest.importorskip("scoringrules")
    forecast = VolumeForecast(2.0, 0.5)
    for observed in (0.7, 2.0, 3.1):
        assert forecast.crps(observed) == pytest.approx(float(scoringrules.crps_normal(observed, 2.0, 0.5)), rel=1e-9)
    low, high = forecast.interval(0.9)
    assert low == pytest.approx(2.0 - 1.6449 * 0.5, abs=1e-3) and high == pytest.approx(2.0 + 1.6449 * 0.5, abs=1e-3)
    assert VolumeForecast(0.1, 1.0).interval()[0] == 0.0  # a volume is never negative

    probability = np.zeros((10, 10, 10), np.float32)
    probability[2:6, 2:6, 2:6] = 0.9
    probability[6, 2:6, 2:6] = 0.5
    evidence = VolumeEvidence.from_probability(probability, 0.001)
    assert evidence.mean_ml == pytest.approx((64 * 0.9 + 16 * 0.5) * 0.001)
    assert evidence.half_width_ml == pytest.approx(0.5 * 16 * 0.001)
    assert evidence.poisson_sd_ml == pytest.approx(np.sqrt(64 * 0.09 + 16 * 0.25) * 0.001)
    # raters spread like the level-set width: the fitted scale covers them, the Poisson-binomial spread does not
    rng = np.random.default_rng(0)
    means, halves = rng.uniform(0.5, 3, 60), rng.uniform(0.05, 0.3, 60)
    cases = [VolumeEvidence(m, h, 0.01 * h, 0.001) for m, h in zip(means, halves, strict=True)]
    raters = [list(e.mean_ml + rng.normal(0, 2 * e.half_width_ml, 4)) for e in cases]
    scale = fit_scale(cases, raters)
    assert 1.2 < scale < 3.5
    fitted, poisson = [e.forecast(scale) for e in cases], [e.forecast(None) for e in cases]
    assert mean_crps(fitted, raters) < mean_crps(poisson, raters)
    assert coverage(fitted, raters) > 0.75 > coverage(poisson, raters)


def test_prediction_scores_and_aggregation():
    true = np.array([0.9, 0.8, 0.3, 0.85, 0.5, 0.95])
    perfect = prediction_scores(true, true)
    assert perfect["r2"] == 1 and perfect["mae"] == 0 and perfect["auroc_bad"] == 1
    noisy = prediction_scores(true + np.array([0.05, -0.1, 0.2, 0.0, -0.05, 0.1]), true)
    assert noisy["r2"] <= noisy["pearson"] ** 2 + 1e-9  # R^2 can never beat r^2 on the same pairs
    ranks = score_scores(1 - true, true)
    assert ranks["spearman"] == -1 and ranks["auroc_bad"] == 1
    combined = rank_aggregate([1 - true, np.array([0.0, 0.1, 0.9, 0.2, 0.5, 0.05])])
    assert np.argmax(combined) == 2 and combined.min() > 0


def test_review_flag_threshold(predicted):
    rows = [r.features for _, _, r in predicted] * 4  # 24 rows: enough for 5 folds
    dice = np.array([r.features["expected_dice"] for _, _, r in predicted] * 4)
    estimated = cross_validated_estimates(rows, dice, 1.0)
    assert estimated.shape == dice.shape and ((estimated >= 0) & (estimated <= 1)).all()
    assert review_threshold(estimated, dice, bad=0.0) == 0.0  # no bad case: the Dice threshold itself
    bad = float(np.median(dice))
    threshold = review_threshold(estimated, dice, bad=bad)
    assert dice.min() - 0.2 < threshold < 1.0
    # too few cases for a bound at delta = 0.05: the Youden threshold alone, without a bound
    assert triage_rule(estimated, dice, bad=bad) == (threshold, None)
    flags = flag_scores(np.array([True, False, True, False]), np.array([True, True, False, False]))
    assert flags == {"sensitivity": 0.5, "specificity": 0.5, "flagged": 0.5}


def test_linear_and_network_predictors(predicted, tmp_path):
    rows = [r.features for _, _, r in predicted]
    dice = np.array([r.dice for _, _, r in predicted])
    linear = fit_linear(rows, dice)
    again = LinearQuality(**json.loads(json.dumps(linear.to_dict())))  # stored as plain numbers
    np.testing.assert_allclose(again.predict(rows), linear.predict(rows))
    assert ((linear.predict(rows) >= 0) & (linear.predict(rows) <= 1)).all()
    with pytest.raises(ModelError, match="error_probability:band_mean"):
        linear.predict([{k: v for k, v in rows[0].items() if not k.startswith("error_probability")}])

    inputs = torch.stack([r.net_input for _, _, r in predicted])
    assert inputs.shape == (len(rows), 3, *NET_SHAPE)
    net = fit_net(inputs, dice, epochs=60)
    first = predict_net(net, inputs)
    assert ((first > 0) & (first < 1)).all()
    np.testing.assert_allclose(predict_net(fit_net(inputs, dice, epochs=60), inputs), first, atol=1e-6)  # seeded
    assert np.abs(first - dice).mean() < np.abs(dice.mean() - dice).mean() + 0.05  # it learns something


def test_train_quality_bundles_the_predictors_and_predict_reports_them(lidc_cache, bundled_package, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(bundled_package.path, folder)
    args = ["train-quality", "--model", str(folder), "--cache-dir", str(lidc_cache), "--net-epochs", "3"]
    assert run_quietly(*args) == 0
    card = json.loads((folder / "model.json").read_text())
    section = card["quality"]
    assert section["training"]["data"]["cases"] == 3 and section["test"]["cases"] == 3
    assert section["linear"]["features"] == list(LINEAR_FEATURES) and section["volume_scale"] > 0
    assert "quality_net.safetensors" in card["files"]
    # the three test cases are one patient's: no half to fit the guarantees on, and the copied
    # package's guarantees, fitted with other predictors, are not kept
    assert "guarantees" not in card

    out = tmp_path / "out"
    demo = sample_path("lidc-nodule-demo.nrrd")
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(out), "--model", str(folder)) == 0
    quality = json.loads((out / "summary.json").read_text())["quality"]
    assert 0 <= quality["estimated_dice"] <= 1 and 0 <= quality["estimated_dice_net"] <= 1
    assert quality["needs_review"] == (quality["estimated_dice"] < section["review_below"])
    review = json.loads((out / "summary.json").read_text())["guarantees"]["review"]
    assert not review["available"] and review["reason"].endswith("has no calibration set for a guarantee")
    low, high = quality["volume_forecast_ml"]["interval_90"]
    assert low <= quality["volume_forecast_ml"]["mean"] <= high
    assert quality["features"]["volume_ml"] == pytest.approx(
        json.loads((out / "summary.json").read_text())["classes"][0]["volume_ml"], rel=1e-4
    )

    # other methods give no head maps: no estimate rather than a wrong one
    out2 = tmp_path / "msp"
    assert (
        run_quietly(
            "predict", "--input", str(demo), "--output-dir", str(out2), "--model", str(folder), "--uncertainty", "msp"
        )
        == 0
    )
    assert "quality" not in json.loads((out2 / "summary.json").read_text())

    # a tampered network file is refused
    (folder / "quality_net.safetensors").write_bytes(
        (folder / "quality_net.safetensors").read_bytes()[:-4] + b"\0\0\0\0"
    )
    out3 = tmp_path / "tampered"
    assert run_quietly("predict", "--input", str(demo), "--output-dir", str(out3), "--model", str(folder)) == 1
    assert not out3.exists() or not (out3 / "summary.json").exists()
    assert load_package(folder).card.quality.net_file == "quality_net.safetensors"
