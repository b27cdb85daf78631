"""Backbone training writes a loadable, documented model package, reproducibly."""

import json

import numpy as np

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import BACKBONE_FILE, load_package
from SegUncertaintyLib.patches import PatchSampler
from SegUncertaintyLib.training import BackboneConfig, train_backbone


def test_train_backbone_command_writes_a_documented_package(lidc_cache, tmp_path, capsys):
    out = tmp_path / "model"
    args = [
        "train-backbone",
        "--output",
        str(out),
        "--cache-dir",
        str(lidc_cache),
        "--iterations",
        "3",
        "--filters",
        "4,8,16",
        "--train-limit",
        "3",
        "--eval-limit",
        "1",
        "--device",
        "cpu",
        "--progress",
        "json",
    ]
    assert main(args) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert events[-1] == {"event": "done", "outputs": {"package": str(out)}}
    package = load_package(out)
    training = package.card.training
    assert training["command"] == "seguncertainty " + " ".join(args)
    assert training["held_out"]["cases"] == 1 and 0.0 <= training["held_out"]["dice_vs_majority_mean"] <= 1.0
    assert training["data"]["train_cases"] == 3 and training["seconds"] > 0
    assert package.card.normalization.scheme == "ct" and package.card.normalization.std > 0
    network = load_backbone(package)
    from SegUncertaintyLib.data.lidc_dataset import load_cases

    case = load_cases("test", lidc_cache, limit=1)[0]
    prediction = predict_volume(case.volume, package, network=network, device="cpu")
    assert prediction.labels.shape == case.image.shape


def test_training_is_reproducible_given_the_seed(lidc_cache, tmp_path):
    config = BackboneConfig(filters=(4, 8, 16), iterations=2, train_limit=2, eval_limit=1, seed=3)
    train_backbone(config, tmp_path / "a", lidc_cache, "cpu")
    train_backbone(config, tmp_path / "b", lidc_cache, "cpu")
    assert (tmp_path / "a" / BACKBONE_FILE).read_bytes() == (tmp_path / "b" / BACKBONE_FILE).read_bytes()


def test_patch_sampler_draws_foreground_patches_with_one_rater(lidc_cache):
    from SegUncertaintyLib.data.lidc_dataset import load_cases

    cases = load_cases("train", lidc_cache)
    images = [c.image.astype(np.float32) for c in cases]
    sampler = PatchSampler(images, [c.raters for c in cases], (32, 32, 32), 1.0, np.random.default_rng(0))
    x, y = sampler.sample(8)
    assert x.shape == (8, 1, 32, 32, 32) and y.shape == (8, 1, 32, 32, 32)
    assert set(np.unique(y.numpy())) <= {0, 1}
    assert (y.flatten(1).sum(1) > 0).float().mean() >= 0.75  # patches are drawn around the nodule


def test_impossible_settings_are_refused_with_a_message(capsys, tmp_path):
    for flags, message in [
        (["--iterations", "0"], "at least 1"),
        (["--filters", "4,8"], "at least 3 stages"),
        (["--filters", "a,b"], "comma-separated integers"),
        (["--dropout", "1.5"], "dropout"),
    ]:
        assert main(["train-backbone", "--output", str(tmp_path / "m"), *flags]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
