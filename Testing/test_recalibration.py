"""The calibration baselines (temperature and vector scaling): fitted by maximum likelihood on real
held-out voxels, kept in the card, run as uncertainty methods, refused clearly where none is fitted."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from SegUncertaintyLib.calibration import LogitScaling
from SegUncertaintyLib.cli import main
from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.metrics import negative_log_likelihood, region_around
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.recalibration import fit_recalibration, scaling_of
from SegUncertaintyLib.resources import sample_path

from .helpers import package_with_section


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities whose true logit is 0.4 (log p1 - log p0) + 0.7: too confident, biased."""
    logit = rng.normal(0, 3, n)
    p1 = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < 1 / (1 + np.exp(-(0.4 * logit + 0.7)))).astype(np.int64)
    return np.stack([1 - p1, p1]), labels


def test_the_fits_recover_a_known_miscalibration():
    probabilities, labels = _synthetic(200_000, np.random.default_rng(0))
    vector = LogitScaling.fit(probabilities, labels, per_class=True)
    # softmax(a0 log p0 + b0, a1 log p1 + b1) is the truth where a0 = a1 = 0.4 and b1 - b0 = 0.7
    assert vector.scale == pytest.approx((0.4, 0.4), abs=0.02) and vector.bias == pytest.approx((0.0, 0.7), abs=0.03)
    temperature = LogitScaling.fit(probabilities, labels, per_class=False)
    assert 1.5 < temperature.temperature < 3.5 and vector.temperature is None
    tempered = temperature.apply(probabilities)
    np.testing.assert_array_equal(tempered.argmax(axis=0), probabilities.argmax(axis=0))  # T keeps the labels
    np.testing.assert_allclose(tempered.sum(axis=0), 1.0, atol=1e-6)
    assert LogitScaling.from_dict(json.loads(json.dumps(vector.to_dict()))) == vector
    with pytest.raises(ValueError, match="classes"):
        vector.apply(np.full((3, 4), 1 / 3))


@pytest.fixture(scope="module")
def fitted(lidc_cache, bundled_package):
    """The baselines fitted on the real calibration cases of the small cache, with the voxels they saw."""
    predictor = Predictor(bundled_package, "cpu")
    cases = load_dataset_cases("lidc", "calibration", lidc_cache)
    section = fit_recalibration(cases, lambda volume: predictor.predict(volume, "none"))
    voxels, labels = [], []
    for case in cases:
        prediction = predictor.predict(case.volume, "none")
        roi = region_around(np.concatenate([prediction.labels[None] > 0, case.raters > 0]), 3.0, case.geometry.spacing)
        voxels.append(prediction.probabilities[:, roi])
        labels.append(case.majority[roi].astype(np.int64))
    return section, np.concatenate(voxels, axis=1), np.concatenate(labels)


def test_each_fit_lowers_the_likelihood_loss_of_the_voxels_it_was_fitted_on(fitted):
    section, probabilities, labels = fitted
    assert section.training["cases"] == 3 and section.training["voxels"] == labels.size > 1000
    temperature, vector = (LogitScaling.from_dict(d) for d in (section.temperature, section.vector))
    raw = negative_log_likelihood(probabilities, labels)
    tempered = negative_log_likelihood(temperature.apply(probabilities), labels)
    scaled = negative_log_likelihood(vector.apply(probabilities), labels)
    # maximum likelihood over nested families: identity within temperature, temperature within vector
    assert scaled <= tempered + 1e-6 and tempered < raw
    assert temperature.temperature > 1  # the backbone is overconfident around its outlines


def test_the_methods_run_from_the_bundled_card_and_write_the_maps_they_name(bundled_package, tmp_path):
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    predictor = Predictor(bundled_package, "cpu")
    plain = predictor.predict(demo, "none")
    tempered = predictor.predict(demo, "temperature")
    np.testing.assert_array_equal(tempered.labels, plain.labels)
    expected = scaling_of(bundled_package, "temperature").apply(plain.probabilities)
    np.testing.assert_array_equal(tempered.calibrated_probabilities, expected)
    np.testing.assert_allclose(tempered.maps["max_softmax"], 1 - expected.max(axis=0), atol=1e-6)
    scaled = predictor.predict(demo, "vector-scaling")
    np.testing.assert_array_equal(scaled.labels, scaled.calibrated_probabilities.argmax(axis=0))

    out = tmp_path / "out"
    args = ["predict", "--input", str(sample_path("lidc-nodule-demo.nrrd")), "--output-dir", str(out)]
    assert main([*args, "--uncertainty", "temperature", "--device", "cpu", "--progress", "none"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "temperature"
    written = read_volume(out / summary["outputs"]["calibrated_probabilities"]["nodule"]).array
    np.testing.assert_allclose(written, expected[1], atol=1e-6)


def test_a_package_without_them_says_which_command_fits_them(bundled_package, tmp_path, capsys):
    bare = dataclasses.replace(bundled_package, card=dataclasses.replace(bundled_package.card, recalibration=None))
    with pytest.raises(ModelError, match=r"no fitted vector-scaling; .*seguncertainty fit-recalibration"):
        Predictor(bare, "cpu").resolve("vector-scaling")
    deepbet = tmp_path / "out"
    demo = str(sample_path("lidc-nodule-demo.nrrd"))
    code = main(["predict", "--input", demo, "--output-dir", str(deepbet), "--model", "deepbet", "--uncertainty",
                 "temperature", "--progress", "none"])  # fmt: skip
    assert code == 1 and "fit-recalibration" in capsys.readouterr().err and not deepbet.exists()


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["temperature"].update(scale=[-0.5, -0.5]),
        lambda r: r["temperature"].update(bias=[0.0, 0.3]),
        lambda r: r["vector"].update(scale=[1.0]),
        lambda r: r.update(platt=1),
    ],
)
def test_a_malformed_recalibration_section_is_refused(bundled_package, tmp_path, change):
    package_with_section(bundled_package, tmp_path / "model", "recalibration", change)
    with pytest.raises(ModelError, match="recalibration"):
        load_package(tmp_path / "model")


def test_fit_recalibration_writes_the_section_into_a_package_folder(bundled_package, lidc_cache, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(bundled_package.path, folder)
    args = ["fit-recalibration", "--model", str(folder), "--cache-dir", str(lidc_cache), "--device", "cpu"]
    assert main([*args, "--progress", "none"]) == 0
    section = load_package(folder).card.recalibration
    assert section.training["cases"] == 3 and section.training["data"] == {"dataset": "lidc", "split": "calibration"}
    assert section.temperature != bundled_package.card.recalibration.temperature  # refitted on these three cases
