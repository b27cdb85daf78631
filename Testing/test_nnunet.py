"""nnU-Net v2 trained-model folders: a real folder made by nnunetv2 itself (Testing/data/make_nnunet_model.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.model.backbones import FeatureTaps, load_backbone
from SegUncertaintyLib.model.discovery import is_nnunet_folder
from SegUncertaintyLib.model.nnunet import read_checkpoint
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.resources import sample_path

from .helpers import run_quietly

pytest.importorskip(
    "dynamic_network_architectures", reason="nnU-Net networks are built with dynamic-network-architectures"
)

FOLDER = (
    Path(__file__).resolve().parent
    / "data"
    / "nnunet-lidc-tiny"
    / "Dataset901_LIDCNodule"
    / "nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres"
)


class Exploit:
    """Unpickled, this would call a function of the file's choosing (here a harmless one)."""

    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


@pytest.fixture
def nnunet_copy(tmp_path):
    target = tmp_path / FOLDER.name
    shutil.copytree(FOLDER, target)
    return target


def test_the_folder_becomes_a_model_card():
    assert is_nnunet_folder(FOLDER)
    card = load_package(FOLDER).card
    plans = json.loads((FOLDER / "plans.json").read_text())
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    assert card.classes == ["background", "nodule"] and card.in_channels == 1 and card.modality == "CT"
    assert card.target_spacing_mm == (1.0, 1.0, 1.0) and card.patch_size == (48, 48, 48)
    assert card.normalization.scheme == "ct"
    assert card.normalization.clip == (stats["percentile_00_5"], stats["percentile_99_5"])
    assert card.normalization.mean == pytest.approx(stats["mean"]) and card.normalization.std == pytest.approx(
        stats["std"]
    )
    assert [t["name"] for t in card.taps] == ["decoder.stages.0", "decoder.stages.1", "decoder.stages.2"]
    assert [t["channels"] for t in card.taps] == [32, 16, 8]


def test_the_network_carries_the_checkpoints_weights_and_segments_a_nodule():
    package = load_package(FOLDER)
    network = load_backbone(package)
    weights = read_checkpoint(FOLDER / "fold_0" / "checkpoint_final.pth")["network_weights"]
    state = network.state_dict()
    assert set(state) == set(weights)
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    with FeatureTaps(network, [t["name"] for t in package.card.taps]) as taps, torch.no_grad():
        logits = network(torch.zeros(1, 1, 48, 48, 48))
        assert logits.shape == (1, 2, 48, 48, 48)
        assert [taps.features[t["name"]].shape[1] for t in package.card.taps] == [32, 16, 8]

    # the demo nodule (a test-split patient; 0.7 x 0.7 x 1.25 mm, resampled to the plans' 1 mm)
    volume = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    raters = read_volume(sample_path("lidc-nodule-demo-raters.nrrd")).array
    prediction = predict_volume(volume, package, network=network, device="cpu")
    nodule, majority = prediction.labels == 1, raters >= 2
    dice = 2 * (nodule & majority).sum() / (nodule.sum() + majority.sum())
    assert dice > 0.8  # after one nnU-Net epoch


def test_checkpoints_that_hold_code_or_are_damaged_are_refused(nnunet_copy):
    checkpoint = nnunet_copy / "fold_0" / "checkpoint_final.pth"
    original = checkpoint.read_bytes()
    checkpoint.write_bytes(original[: len(original) // 3])
    with pytest.raises(ModelError, match="refusing to load"):
        load_backbone(load_package(nnunet_copy))

    torch.save({"network_weights": {}, "payload": Exploit()}, str(checkpoint))
    with pytest.raises(ModelError, match="refusing to load"):
        load_backbone(load_package(nnunet_copy))

    plans = json.loads((nnunet_copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"
    (nnunet_copy / "plans.json").write_text(json.dumps(plans))
    checkpoint.write_bytes(original)
    with pytest.raises(ModelError, match="only classes from dynamic_network_architectures"):
        load_backbone(load_package(nnunet_copy))


def test_predict_and_a_trained_head_on_the_nnunet_folder(nnunet_copy, lidc_cache, tmp_path):
    out = tmp_path / "plain"
    source = str(sample_path("lidc-nodule-demo.nrrd"))
    assert run_quietly("predict", "--input", source, "--model", str(nnunet_copy), "--output-dir", str(out)) == 0
    assert json.loads((out / "summary.json").read_text())["uncertainty"] == "none"

    tiny = ["--cache-dir", str(lidc_cache), "--max-epochs", "2", "--batch-size", "2"]
    assert run_quietly("train-head", "--model", str(nnunet_copy), *tiny) == 0
    assert (nnunet_copy / "head.safetensors").is_file() and (nnunet_copy / "model.json").is_file()
    package = load_package(nnunet_copy)  # now through the card train-head wrote beside the nnU-Net files
    assert package.card.architecture["name"] == "nnUNet" and package.card.head

    out = tmp_path / "with-head"
    assert run_quietly("predict", "--input", source, "--model", str(nnunet_copy), "--output-dir", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "segwithu"
    ranking = read_volume(out / "ranking.nrrd").array
    assert ranking.shape == read_volume(source).array.shape and np.isfinite(ranking).all() and ranking.std() > 0

    # and the fragility search, on nnU-Net's last convolution, with a replay set drawn for it
    replay = ["--model", str(nnunet_copy), "--cache-dir", str(lidc_cache), "--patches", "2", "--progress", "none"]
    assert main(["prepare-replay", *replay]) == 0
    out = tmp_path / "fragility"
    assert (
        run_quietly(
            "predict", "--input", source, "--model", str(nnunet_copy), "--output-dir", str(out),
            "--fragility", "--fragility-steps", "4", "--fragility-radii", "2",
        )
        == 0
    )  # fmt: skip
    search = json.loads((out / "summary.json").read_text())["fragility"]
    fragile = read_volume(out / "fragile.nrrd").array > 0
    assert len(search["adversaries"]) == 2 and search["fragile_voxels"] == int(fragile.sum())
