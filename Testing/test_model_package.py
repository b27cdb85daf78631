"""Model packages: the card, safetensors weights, and every way a package can be broken."""

import json
import pickle
import shutil

import pytest
import torch

from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.model.backbones import FeatureTaps, build_backbone, load_backbone
from SegUncertaintyLib.model.package import BACKBONE_FILE, CARD_NAME, ModelCard, load_package, resolve_model


@pytest.fixture
def package_copy(tmp_path, bundled_package):
    target = tmp_path / "pkg"
    shutil.copytree(bundled_package.path, target)
    return target


def test_bundled_package_loads_with_its_trained_weights(bundled_package):
    card = bundled_package.card
    assert card.classes == ["background", "nodule"] and card.in_channels == 1
    assert card.files[BACKBONE_FILE]  # weights are checked against this SHA-256
    assert card.training["command"].startswith("seguncertainty train-backbone")
    assert card.training["held_out"]["split"] == "test"
    network = load_backbone(bundled_package)
    assert not network.training
    untrained = build_backbone(card.architecture)
    trained, fresh = dict(network.named_parameters()), dict(untrained.named_parameters())
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained)


def test_card_round_trip_keeps_unknown_sections(bundled_package):
    data = bundled_package.card.to_dict()
    data["fragility"] = {"steps": 8, "radii_mm": [1, 2]}  # a section this version does not know
    card = ModelCard.from_dict(json.loads(json.dumps(data)))
    assert card.extra == {"applicability": data["applicability"], "fragility": {"steps": 8, "radii_mm": [1, 2]}}
    assert card.to_dict() == data
    assert card.head.config["probes"] == data["head"]["config"]["probes"] and card.head.file == "head.safetensors"
    assert card.quality.review_below == data["quality"]["review_below"] and card.display.window == (-600.0, 1500.0)
    assert card.inference.overlap == data["inference"]["overlap"] and card.inference.frame == "LPS"  # the default


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other/9"), "unsupported format"),
        (lambda d: d.pop("classes"), "missing field"),
        (lambda d: d.update(classes=["only"]), "at least 2 classes"),
        (lambda d: d["normalization"].update(scheme="minmax"), "unknown normalisation"),
        (lambda d: d.update(target_spacing_mm=[1, 1]), "three positive"),
        (lambda d: d["inference"].update(overlapp=0.3), "unknown inference setting.*overlapp"),
        (lambda d: d["inference"].update(overlap=1.0), r"inference.overlap must lie in \[0, 1\)"),
        (lambda d: d["inference"].update(mode="whole"), "needs inference.shape"),
        (lambda d: d["head"].update(slope=7.7), "unknown head setting.*slope"),
        (lambda d: d["head"].update(method="laplace"), "unknown head.method"),
        (lambda d: d["quality"].update(net="quality_net.safetensors"), "quality.net must name"),
        (lambda d: d["quality"].pop("volume_scale"), "volume_scale"),
        (lambda d: d["display"].update(window=[-600, 0]), "positive width"),
    ],
)
def test_malformed_cards_are_refused(package_copy, change, message):
    data = json.loads((package_copy / CARD_NAME).read_text())
    change(data)
    (package_copy / CARD_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        load_package(package_copy)


def test_missing_or_unreadable_card(tmp_path, package_copy):
    with pytest.raises(ModelError, match="neither a model package folder nor a bundled model"):
        load_package(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"model\.json is missing"):
        load_package(tmp_path / "empty")
    (package_copy / CARD_NAME).write_text("{not json")
    with pytest.raises(ModelError, match="cannot read model card"):
        load_package(package_copy)


def test_truncated_weights_are_refused(package_copy):
    weights = package_copy / BACKBONE_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="corrupted"):
        load_backbone(load_package(package_copy))
    # without a checksum in the card (a third-party package), safetensors itself notices
    card = json.loads((package_copy / CARD_NAME).read_text())
    card["files"] = {}
    (package_copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="corrupted or truncated"):
        load_backbone(load_package(package_copy))


def test_flipped_bit_is_caught_by_the_checksum(package_copy):
    weights = package_copy / BACKBONE_FILE
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # inside a tensor: safetensors alone would load it
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256 differs"):
        load_backbone(load_package(package_copy))


def test_pickle_disguised_as_weights_is_never_unpickled(package_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (package_copy / BACKBONE_FILE).write_bytes(pickle.dumps(Payload()))
    card = json.loads((package_copy / CARD_NAME).read_text())
    card["files"] = {}
    (package_copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError):
        load_backbone(load_package(package_copy))
    assert not marker.exists()


def test_weights_for_another_architecture_are_refused(package_copy):
    card = json.loads((package_copy / CARD_NAME).read_text())
    card["architecture"]["args"]["filters"] = [f * 2 for f in card["architecture"]["args"]["filters"]]
    (package_copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not fit"):
        load_backbone(load_package(package_copy))


def test_unknown_architecture_and_bundled_name(package_copy):
    card = json.loads((package_copy / CARD_NAME).read_text())
    card["architecture"]["name"] = "ResNet9000"
    (package_copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="unknown architecture"):
        load_backbone(load_package(package_copy))
    with pytest.raises(ModelError, match="lidc-nodule"):
        resolve_model("no-such-model")


def test_feature_taps_capture_named_outputs(bundled_package):
    network = load_backbone(bundled_package)
    x = torch.zeros(1, 1, 48, 48, 48)
    with torch.inference_mode(), FeatureTaps(network, ["bottleneck", "upsamples.2"]) as taps:
        network(x)
    filters = bundled_package.card.architecture["args"]["filters"]
    assert taps.features["bottleneck"].shape == (1, filters[-1], 6, 6, 6)
    assert taps.features["upsamples.2"].shape == (1, filters[0], 48, 48, 48)
    assert not network._forward_hooks and all(not m._forward_hooks for m in network.modules())
    with pytest.raises(ModelError, match="not found"):
        FeatureTaps(network, ["decoder.nothing"])
