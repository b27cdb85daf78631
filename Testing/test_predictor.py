"""A Predictor normalises a case once, for its prediction, its fragility search and its quality estimate."""

import dataclasses
import gc

import numpy as np
import pytest

from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.preprocess import normalize_intensities
from SegUncertaintyLib.resources import sample_path

DEMO = sample_path("lidc-nodule-demo.nrrd")
# every module that normalises an image for the network (applicability's novelty score normalises a
# subsampled copy by its own statistics, as it was fitted; it is not counted)
NORMALISING = (
    "SegUncertaintyLib.predictor",
    "SegUncertaintyLib.inference",
    "SegUncertaintyLib.roi",
    "SegUncertaintyLib.quality.estimate",
)


@pytest.fixture
def full_size_normalisations(monkeypatch):
    """The shapes of the whole-volume arrays normalised while the test runs."""
    import importlib

    shapes = []

    def counting(array, norm):
        shapes.append(array.shape)
        return normalize_intensities(array, norm)

    for name in NORMALISING:
        monkeypatch.setattr(importlib.import_module(name), "normalize_intensities", counting)
    return shapes


def test_a_case_is_normalised_once_for_prediction_search_and_quality(
    bundled_package, tmp_path, full_size_normalisations
):
    folder = predict_to_files(
        DEMO, tmp_path, bundled_package, "cpu", fragility=FragilityConfig(radii_mm=(1.0,), steps=2)
    )
    assert folder.summary.quality is not None and folder.summary.fragility is not None  # all three ran
    shape = read_volume(DEMO).array.shape
    assert full_size_normalisations == [shape]


def test_the_normalised_image_is_the_volumes_and_goes_with_it(bundled_package):
    predictor = Predictor(bundled_package, "cpu")
    volume = read_volume(DEMO)
    first = predictor.normalised(volume)
    assert predictor.normalised(volume) is first
    np.testing.assert_array_equal(first, normalize_intensities(volume.array, bundled_package.card.normalization))
    other = type(volume)(volume.array[::-1].copy(), volume.geometry)  # another volume: its own image
    assert not np.array_equal(predictor.normalised(other), first)
    del volume, other
    gc.collect()
    assert predictor._normalised is None  # the last volume gone, its normalised image is not kept


def test_a_prediction_is_never_changed_once_made(bundled_package):
    predictor = Predictor(bundled_package, "cpu")
    volume = read_volume(DEMO)
    prediction = predictor.predict(volume, "msp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prediction.maps = {}
    found = predictor.search(volume, prediction)
    joined = prediction.with_maps(found.maps, fragility=1.5)
    assert set(prediction.maps) == {"max_softmax"} and "fragility" not in prediction.timings  # the first unchanged
    assert set(joined.maps) == {"max_softmax", *found.maps} and joined.timings["fragility"] == 1.5
    with pytest.raises(ValueError, match="not on the prediction's grid"):
        prediction.with_maps({"half": found.maps["flip_mass"][::2]})
