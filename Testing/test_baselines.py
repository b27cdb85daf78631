"""Baselines on the real engine: the sample statistics, TTA flips, MC dropout and the deep ensemble."""

import json
import shutil

import numpy as np
import pytest
import torch

from SegUncertaintyLib.baselines import FLIPS, enable_dropout, flipped_window, sampling_windows
from SegUncertaintyLib.cli import main
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.inference import predict_sampled
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.members import dropout_package, ensemble_packages, member_packages
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.uncertainty import SampleStatistics

from .helpers import predict_args


def test_sample_statistics_match_the_pairwise_definitions():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (5, 3, 40))  # M samples, C classes, N voxels
    stats = SampleStatistics()
    for z in logits:
        stats.add_logits(torch.from_numpy(z))
    maps = {k: v.numpy() for k, v in stats.maps().items()}
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean = p.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum(axis=0)
    expected_entropy = -(p * np.log(p)).sum(axis=1).mean(axis=0)
    kl = [(p[i] * (np.log(p[i]) - np.log(p[j]))).sum(axis=0) for i in range(5) for j in range(5) if i != j]
    np.testing.assert_allclose(stats.mean_probabilities().numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(maps["entropy"], entropy, atol=1e-12)
    np.testing.assert_allclose(maps["mutual_information"], entropy - expected_entropy, atol=1e-12)
    np.testing.assert_allclose(maps["epkl"], np.mean(kl, axis=0), atol=1e-12)
    assert np.all(maps["epkl"] >= maps["mutual_information"] - 1e-12)
    assert np.all(maps["mutual_information"] > 0)

    same = SampleStatistics()
    for _ in range(3):
        same.add_logits(torch.from_numpy(logits[0]))
    assert float(same.maps()["mutual_information"].abs().max()) < 1e-12
    assert float(same.maps()["epkl"].abs().max()) < 1e-12


def test_flipped_window_flips_every_output_back():
    def equivariant(window):  # any per-voxel function commutes with flips
        return {"logits": torch.cat([window, 2 * window], dim=1), "other": window**2}

    window = torch.randn(2, 1, 6, 7, 8)
    assert len(FLIPS) == 8 and FLIPS[0] == () and len(set(FLIPS)) == 8
    for dims in FLIPS:
        out = flipped_window(equivariant, dims)(window)
        for name, value in equivariant(window).items():
            torch.testing.assert_close(out[name], value, rtol=0, atol=0)


def test_tta_predict_writes_its_maps_on_the_input_grid(tmp_path, capsys):
    out = tmp_path / "tta"
    assert main(predict_args(sample_path("lidc-nodule-demo.nrrd"), out, "--uncertainty", "tta", "--samples", "3")) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "tta" and summary["forward_passes"] == 3
    assert set(summary["outputs"]["maps"]) == {"entropy", "expected_entropy", "mutual_information", "epkl"}
    source = read_volume(sample_path("lidc-nodule-demo.nrrd")).geometry
    maps = {name: read_volume(out / file) for name, file in summary["outputs"]["maps"].items()}
    for volume in maps.values():
        assert volume.geometry.is_close(source)
    mi, epkl = maps["mutual_information"].array, maps["epkl"].array
    assert mi.min() >= 0 and mi.max() > 1e-3  # flips do disagree somewhere
    assert np.all(epkl >= mi - 1e-5)
    # the segmentation is the argmax of the mean probability the command wrote
    labels = read_volume(out / "segmentation.nrrd").array
    probability = read_volume(out / summary["outputs"]["probabilities"]["nodule"]).array
    np.testing.assert_array_equal(labels > 0, probability > 0.5)


@pytest.fixture(scope="module")
def demo_volume():
    return read_volume(sample_path("lidc-nodule-demo.nrrd"))


def test_mc_dropout_samples_differ_are_seeded_and_leave_the_global_random_state(bundled_package, demo_volume):
    assert dropout_package(bundled_package).card.architecture["args"]["dropout"] > 0
    windows = sampling_windows("mc-dropout", bundled_package, "cpu", samples=3)
    state = torch.get_rng_state()
    first = predict_sampled(demo_volume, bundled_package, windows, "cpu", keep_sample_labels=True)
    assert torch.equal(state, torch.get_rng_state())
    second = Predictor(bundled_package, "cpu", samples=3).predict(demo_volume, "mc-dropout")
    np.testing.assert_array_equal(first.maps["epkl"], second.maps["epkl"])
    assert first.forward_passes == 3 and first.sample_labels.shape == (3, *demo_volume.geometry.shape)
    assert first.maps["mutual_information"].max() > 1e-3
    np.testing.assert_allclose(first.probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_enable_dropout_refuses_a_backbone_without_dropout(bundled_package):
    with pytest.raises(ModelError, match="no dropout layers"):
        enable_dropout(load_backbone(bundled_package))


def test_the_ensemble_is_the_package_and_its_members(bundled_package, demo_volume):
    ensemble = ensemble_packages(bundled_package)
    assert ensemble[0] is bundled_package and len(ensemble) >= 3
    assert len({p.card.files["backbone.safetensors"] for p in ensemble}) == len(ensemble)  # distinct weights
    prediction = Predictor(bundled_package, "cpu").predict(demo_volume, "ensemble")
    assert prediction.forward_passes == len(ensemble)
    assert prediction.maps["mutual_information"].max() > 1e-3


@pytest.fixture
def package_without_members(tmp_path, bundled_package):
    folder = tmp_path / "no-members"
    shutil.copytree(bundled_package.path, folder, ignore=shutil.ignore_patterns("members"))
    return folder


@pytest.mark.parametrize(
    "method,message", [("ensemble", "no ensemble members"), ("mc-dropout", "trained with dropout")]
)
def test_missing_members_get_a_clear_error_before_any_work(tmp_path, capsys, package_without_members, method, message):
    out = tmp_path / "out"
    args = predict_args(sample_path("lidc-nodule-demo.nrrd"), out, "--model", str(package_without_members))
    assert main([*args, "--uncertainty", method]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_member_trained_differently_is_refused(tmp_path, bundled_package):
    folder = tmp_path / "mixed"
    shutil.copytree(bundled_package.path, folder)
    card_path = next((folder / "members").iterdir()) / "model.json"
    card = json.loads(card_path.read_text())
    card["target_spacing_mm"] = [2.0, 2.0, 2.0]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="differs in target_spacing_mm"):
        member_packages(load_package(folder))
    with pytest.raises(ModelError, match="tta uses 2 to 8"):
        sampling_windows("tta", load_package(folder), "cpu", samples=9)
