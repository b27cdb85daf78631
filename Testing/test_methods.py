"""The method registry is the one list of methods, and what it says each writes is what each writes."""

import subprocess
import sys

import pytest

from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.methods import EVALUATION_METHODS, METHODS, PREDICT_CHOICES, method
from SegUncertaintyLib.model.catalog import describe
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.resources import sample_path


@pytest.fixture(scope="module")
def demo():
    return read_volume(sample_path("lidc-nodule-demo.nrrd"))


@pytest.fixture(scope="module")
def predictor(bundled_package):
    return Predictor(bundled_package, "cpu", samples=2)


def test_the_registry_needs_no_torch():
    code = "import sys, SegUncertaintyLib.methods; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("name", [name for name in PREDICT_CHOICES if name not in ("auto", "none")])
def test_each_method_writes_the_maps_the_registry_names(predictor, demo, name):
    prediction = predictor.predict(demo, name)
    assert set(prediction.maps) == set(METHODS[name].maps)
    assert set(METHODS[name].scores) <= set(prediction.maps)
    assert set(METHODS[name].decomposition.values()) <= set(prediction.maps)


def test_the_search_writes_the_maps_the_registry_names(predictor, demo):
    prediction = predictor.predict(demo, "none")
    assert prediction.maps == {}
    found = predictor.search(demo, prediction)
    assert tuple(found.maps) == METHODS["fragility"].maps


def test_a_predictor_loads_each_network_once(predictor, demo):
    first = predictor.predict(demo, "segwithu")
    backbone, head, searcher = predictor.backbone, predictor.head, predictor.searcher
    second = predictor.predict(demo, "segwithu")
    assert predictor.backbone is backbone and predictor.head is head and predictor.searcher is searcher
    assert predictor.windows("tta") is predictor.windows("tta")
    assert (first.labels == second.labels).all() and (first.maps["ranking"] == second.maps["ranking"]).all()


def test_unknown_and_unservable_methods_are_refused_by_name(predictor, tmp_path):
    from SegUncertaintyLib.errors import ModelError

    with pytest.raises(ModelError, match="unknown uncertainty method 'softmax'; use one of auto, segwithu"):
        predictor.resolve("softmax")
    with pytest.raises(ModelError, match="unknown uncertainty method"):
        method("softmax")
    assert predictor.resolve("auto") == "segwithu"
    assert EVALUATION_METHODS == tuple(METHODS)


def test_the_catalog_lists_what_the_package_carries_in_registry_order(bundled_package):
    assert describe(bundled_package)["methods"] == list(METHODS)  # head, dropout, members, replay: all there


def test_predict_many_gives_each_volume_what_predict_gives(predictor, demo):
    flipped = type(demo)(demo.array[:, ::-1].copy(), demo.geometry)  # another volume on the same grid
    many = list(predictor.predict_many([demo, flipped], "msp"))
    for volume, prediction in zip([demo, flipped], many, strict=True):
        alone = predictor.predict(volume, "msp")
        assert (prediction.labels == alone.labels).all()
        assert (prediction.maps["max_softmax"] == alone.maps["max_softmax"]).all()
