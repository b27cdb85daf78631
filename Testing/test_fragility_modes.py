"""Both sides of the contour, the faithful QUAM-SM mode, a replay set labelled by the model itself, any network."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.fragility.config import PENALTY, QuamConfig
from SegUncertaintyLib.fragility.quam import QuamSearch
from SegUncertaintyLib.fragility.replay import REPLAY_FILE, load_replay
from SegUncertaintyLib.fragility.search import FRAGILITY_MAPS, snapshot_weights
from SegUncertaintyLib.fragility.self_replay import build_self_replay
from SegUncertaintyLib.inference import argmax_labels, predict_volume
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry

from .helpers import predict_args

DEMO = sample_path("lidc-nodule-demo.nrrd")


@pytest.fixture(scope="module")
def predictor(bundled_package):
    return Predictor(bundled_package, "cpu")


@pytest.fixture(scope="module")
def demo(predictor):
    volume = read_volume(DEMO)
    return volume, predictor.predict(volume, "none")


def test_a_snapshot_fitting_the_replay_set_better_weighs_as_much_as_the_reference():
    weights = snapshot_weights(np.array([0.08, 0.10, 0.11]), reference=0.10, temperature=0.01)
    np.testing.assert_allclose(weights, [1.0, 1.0, np.exp(-1.0)])


def test_the_default_search_pushes_both_sides_and_no_snapshot_dominates(predictor, demo):
    volume, reference = demo
    result = predictor.search(volume, reference)
    summary, config = result.summary, predictor.fragility
    names = summary["adversaries"]
    assert {n.split()[0] for n in names} == {"grow", "shrink"}
    # every adversary, shrink included, has admissible snapshots
    assert all(count > 0 for count in summary["admissible_per_adversary"])
    losses = np.asarray(summary["replay_loss_per_step"])
    ref = summary["replay_loss_reference"]
    allowed = losses <= ref + config.slack
    weights = snapshot_weights(losses[allowed], ref, config.temperature or config.slack)
    assert weights.max() / (1.0 + weights.sum()) < 0.5
    # flip mass is a share, not saturated at 1 on the fragile voxels
    flips = result.maps["flip_mass"][result.maps["fragile"] > 0]
    assert flips.size and np.median(flips) < 0.9
    # the shrink adversaries' samples remove voxels of the nodule, the grow ones add some
    result = predictor.search(volume, reference, keep_sample_labels=True)
    for m, name in enumerate(names):
        sample = result.sample_labels[1 + m]
        if name.startswith("shrink"):
            assert ((reference.labels > 0) & (sample == 0)).any()
        else:
            assert ((reference.labels == 0) & (sample > 0)).any()


def test_the_published_penalty_schedule():
    config = QuamConfig()
    assert [config.penalty_weight(k) for k in range(6)] == list(PENALTY) == [1, 33, 67, 99, 133, 167]
    assert config.penalty_weight(6) == 1 + 2 * ((50 * 6 - 1) // 3)
    with pytest.raises(Exception, match="positive"):
        QuamConfig(slack=0)


@pytest.fixture(scope="module")
def quam_result(predictor, demo):
    volume, reference = demo
    before = {k: v.clone() for k, v in predictor.backbone.state_dict().items()}
    search = QuamSearch(predictor.package, predictor.backbone, predictor.replay, QuamConfig(steps=2))
    result = search.run(volume, reference, keep_sample_labels=True)
    after = predictor.backbone.state_dict()
    return search, result, all(torch.equal(before[k], after[k]) for k in before)


def test_quam_mode_trains_copies_and_never_the_backbone(quam_result):
    _, _, unchanged = quam_result
    assert unchanged


def test_quam_mode_s_maps_on_the_input_grid(demo, quam_result):
    volume, reference = demo
    search, result, _ = quam_result
    maps, summary = result.maps, result.summary
    assert set(maps) == set(FRAGILITY_MAPS) and all(m.shape == volume.geometry.shape for m in maps.values())
    assert summary["adversaries"] == ["grow nodule 3 voxels", "shrink nodule 3 voxels"]
    assert summary["snapshots"] == 4 and np.asarray(summary["replay_loss_per_step"]).shape == (2, 2)
    np.testing.assert_allclose(
        maps["fragility_total"], maps["fragility_aleatoric"] + maps["fragility_epistemic"], atol=1e-5
    )
    # the reference is left out of the mixture: the weights softmax(-L) of the snapshots alone sum to
    # one, so a voxel's flip mass is the summed weight of the snapshots that flip it
    fragile = maps["fragile"].astype(bool)
    weights = np.exp(-np.asarray(summary["replay_loss_per_step"]).ravel())
    weights /= weights.sum()
    subsets = [weights[[bool(b >> i & 1) for i in range(weights.size)]].sum() for b in range(2**weights.size)]
    assert fragile.any() and min(abs(maps["flip_mass"].max() - s) for s in subsets) < 1e-5
    # a voxel flips only within the targets' reach: 3 voxels (a cube's iterations) of the contour, on this 1 mm grid
    inside = reference.labels > 0
    reach = np.where(
        inside,
        ndimage.distance_transform_cdt(inside, "chessboard"),
        ndimage.distance_transform_cdt(~inside, "chessboard"),
    )
    assert reach[fragile].max() <= 3 + 1
    # samples: the grow adversary adds voxels, the shrink one removes them
    grow, shrink = result.sample_labels[1], result.sample_labels[2]
    assert ((grow > 0) & ~inside).any() and ((shrink == 0) & inside).any()
    # the replay batches' reference losses are the network's own, batch by batch (4 patches each)
    replay = load_replay(search.package)
    with torch.no_grad():
        own = torch.nn.functional.cross_entropy(search.network(replay.images[:4]), replay.labels[:4])
    assert summary["replay_loss_reference"][0] == pytest.approx(float(own), rel=1e-4)


def test_quam_mode_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    args = predict_args(DEMO, out, "--uncertainty", "none", "--fragility", "--fragility-mode", "quam")
    assert main([*args, "--fragility-steps", "1"]) == 0
    fragility = json.loads((out / "summary.json").read_text())["fragility"]
    assert fragility["config"]["mode"] == "quam" and fragility["snapshots"] == 2
    capsys.readouterr()
    assert (
        main([*predict_args(DEMO, tmp_path / "b", "--fragility", "--fragility-mode", "quam", "--fragility-radii", "2")])
        == 1
    )
    assert "fast search" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_a_replay_set_from_the_model_s_own_predictions(tmp_path, bundled_package, capsys):
    package = tmp_path / "package"
    shutil.copytree(bundled_package.path, package, ignore=shutil.ignore_patterns("members", REPLAY_FILE))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(DEMO, images / "demo.nrrd")
    volume = read_volume(DEMO)
    lung = np.random.default_rng(1).normal(-850, 10, (40, 40, 40)).astype(np.float32)  # the model segments nothing
    write_volume(
        lung, Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel()), images / "lung-only.nrrd"
    )
    (images / "broken.nrrd").write_bytes((images / "demo.nrrd").read_bytes()[:2000])  # truncated
    argv = ["prepare-replay", "--model", str(package), "--images", str(images), "--patches", "3", "--device", "cpu"]
    assert main([*argv, "--progress", "none"]) == 0
    err = capsys.readouterr().err
    assert "left out broken.nrrd" in err and "left out lung-only.nrrd: nothing segmented" in err
    loaded = load_package(package)
    entry = loaded.card.extra["fragility"]["replay"]
    assert entry["cases"] == ["demo.nrrd"] * 3 and "own predictions" in entry["labels"]
    replay = load_replay(loaded)
    assert replay.images.shape == (3, 1, 48, 48, 48) and all(replay.labels[r].sum() > 100 for r in range(3))
    assert not torch.equal(replay.images[0], replay.images[1])  # further patches are centred elsewhere
    # and the fast search runs on it
    predictor = Predictor(loaded, "cpu")
    result = predictor.search(volume, predictor.predict(volume, "none"))
    assert result.summary["fragile_voxels"] > 0
    # nothing usable is an error that names what was left out
    with pytest.raises(Exception, match=r"lung-only\.nrrd"):
        build_self_replay(predictor, [images / "lung-only.nrrd"], patches=2)


def test_self_labelled_patches_are_the_model_grid_prediction(tmp_path, bundled_package, demo):
    package = tmp_path / "package"
    shutil.copytree(bundled_package.path, package, ignore=shutil.ignore_patterns("members", REPLAY_FILE))
    loaded = load_package(package)
    own = Predictor(loaded, "cpu")
    build_self_replay(own, [DEMO], patches=1)
    replay = load_replay(load_package(package))
    volume, _ = demo
    labels = argmax_labels(predict_volume(volume, loaded, network=own.backbone, device="cpu").logits)
    assert int(replay.labels.sum()) == int((labels > 0).sum())  # one nodule, wholly inside the patch


def test_any_network_can_be_searched_a_torchscript_one_through_its_logits(tmp_path):
    from .test_torchscript import TinyNet, card_for

    torch.manual_seed(0)
    folder = tmp_path / "package"
    folder.mkdir()
    torch.jit.script(TinyNet().eval()).save(str(folder / "net.pt"))
    sha = hashlib.sha256((folder / "net.pt").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(card_for("net.pt", sha)))
    grid = Geometry((20, 24, 28), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel())
    image = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=grid.shape), 2).astype(np.float32)
    source = write_volume(image, grid, tmp_path / "scan.nrrd")
    predictor = Predictor(load_package(folder), "cpu")
    build_self_replay(predictor, [source], patches=2)  # no labels anywhere: the network's own
    predictor = Predictor(load_package(folder), "cpu")
    volume = read_volume(source)
    reference = predictor.predict(volume, "none")
    assert reference.labels.any() and not reference.labels.all()
    result = predictor.search(volume, reference)
    assert predictor.searcher.spec.part == "logits" and result.summary["config"]["trainable"] == "logits"
    assert all(m.shape == grid.shape for m in result.maps.values())
    assert result.summary["admissible_snapshots"] > 0 and result.maps["fragile"].any()
