"""The SegWithU head: tempering, probes, frozen backbone, determinism, maps, multi-class, bad taps."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import CARD_NAME, load_package
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.segwithu.losses import LossWeights, head_loss
from SegUncertaintyLib.segwithu.network import HeadConfig, SegWithUHead, hadamard_patterns, temper
from SegUncertaintyLib.segwithu.package import HEAD_FILE, has_head, load_head
from SegUncertaintyLib.segwithu.training import HeadTrainingConfig, backbone_outputs, freeze, train_head

from .helpers import rotation, run_quietly

DEMO = sample_path("lidc-nodule-demo.nrrd")


@pytest.mark.parametrize("classes", [2, 4])
def test_tempering_never_changes_the_argmax(classes):
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randn(3, classes, 9, 8, 7, generator=generator) * 5
    calibration = torch.rand(3, 1, 9, 8, 7, generator=generator) * torch.logspace(-3, 6, 7)
    tempered = temper(logits, calibration)
    assert torch.equal(tempered.argmax(1), logits.argmax(1))
    # and it only ever softens: the top probability never grows
    assert (torch.softmax(tempered, 1).amax(1) <= torch.softmax(logits, 1).amax(1) + 1e-6).all()


def test_probe_patterns_are_exact_balanced_and_orthogonal():
    patterns = hadamard_patterns(8)
    assert patterns.shape == (7, 8)
    assert set(patterns.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(patterns.sum(1), torch.zeros(7))  # zero-mean: no DC row
    assert torch.equal(patterns @ patterns.T, 8 * torch.eye(7))
    assert torch.equal(hadamard_patterns(8).double(), patterns.double())  # no float rounding involved
    with pytest.raises(ValueError, match="power of two"):
        HeadConfig(taps=[{"name": "x", "channels": 1}], num_classes=2, probes=6)


@pytest.fixture(scope="module")
def real_batch(lidc_cache, bundled_package):
    """Frozen logits and features of two real calibration patches around nodules."""
    from SegUncertaintyLib.data.lidc_dataset import load_cases
    from SegUncertaintyLib.patches import centred_patch
    from SegUncertaintyLib.preprocess import normalize_intensities

    card = bundled_package.card
    backbone = freeze(load_backbone(bundled_package))
    xs, ys = [], []
    for case in load_cases("calibration", lidc_cache, limit=2):
        image = normalize_intensities(case.image, card.normalization)
        labels = np.asarray(case.majority, np.int64)
        x, y = centred_patch(image, labels, np.argwhere(labels).mean(0).astype(int), card.patch_size)
        xs.append(x)
        ys.append(y)
    x = torch.from_numpy(np.stack(xs)[:, None])
    logits, features = backbone_outputs(backbone, [t["name"] for t in card.taps], x)
    return backbone, x, logits, features, torch.from_numpy(np.stack(ys))


def test_every_head_parameter_receives_a_gradient_and_the_backbone_none(real_batch, bundled_package):
    backbone, _, logits, features, labels = real_batch
    torch.manual_seed(0)
    head = SegWithUHead(HeadConfig(taps=bundled_package.card.taps, num_classes=2))
    loss, terms = head_loss(head(logits, features), logits, labels, LossWeights(), torch.Generator().manual_seed(0))
    loss.backward()
    assert set(terms) == {"nll", "ec", "pairwise", "tail", "trust", "anchor", "residual"}
    untrained = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert untrained == []  # no parameter that no loss trains
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())


def test_the_two_class_path_is_the_any_class_path(real_batch, bundled_package):
    _, _, logits, features, _ = real_batch
    head = load_head(bundled_package)
    with torch.no_grad():
        h = torch.nn.functional.interpolate(head.fusion(features), size=logits.shape[2:], mode="trilinear")
        v = head.probes(h)
        general, binary = head._any_classes(logits, v), head._two_classes(logits, v)
    for name, a, b in zip(("epistemic", "residual", "delta", "margin", "entropy"), general, binary, strict=True):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert general[0].max() > 1e-4  # the probes move these probabilities: a real comparison


def test_the_maps_in_slabs_are_the_maps_of_one_pass(real_batch, bundled_package):
    """Predicting, the head runs its voxel-wise part a slab of W at a time (deepbet's 256^3 held 4 GB at once)."""
    _, _, logits, features, _ = real_batch
    head = load_head(bundled_package)
    with torch.no_grad():
        whole = head(logits, features)
    for slab_voxels in (1, 7 * logits.shape[2] * logits.shape[3]):  # one column of W at a time; 7 columns
        maps = head.maps(logits, features, slab_voxels=slab_voxels)
        for name, value in maps.items():
            torch.testing.assert_close(value, getattr(whole, name), rtol=0, atol=0)


@pytest.fixture
def package_copy(tmp_path, bundled_package):
    target = tmp_path / "pkg"
    shutil.copytree(bundled_package.path, target)
    (target / HEAD_FILE).unlink(missing_ok=True)  # a package with the backbone only
    card = json.loads((target / CARD_NAME).read_text())
    card["head"] = {}
    card["files"].pop(HEAD_FILE, None)
    (target / CARD_NAME).write_text(json.dumps(card))
    return target


TINY = {"max_epochs": 1, "calibration_limit": 3, "eval_limit": 1, "batch_size": 2, "validation_fraction": 0.34}


def test_head_training_leaves_the_backbone_untouched_and_is_deterministic(package_copy, tmp_path, lidc_cache):
    before = {k: v.clone() for k, v in load_backbone(load_package(package_copy)).state_dict().items()}
    section = train_head(package_copy, HeadTrainingConfig(**TINY), lidc_cache, "cpu", "test")
    after = load_backbone(load_package(package_copy)).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    package = load_package(package_copy)
    assert has_head(package) and section["training"]["data"]["split"] == "calibration"
    assert section["held_out"]["split"] == "test" and section["error_probability"]["slope"] > 0
    first = (package_copy / HEAD_FILE).read_bytes()
    train_head(package_copy, HeadTrainingConfig(**TINY), lidc_cache, "cpu", "test")
    assert (package_copy / HEAD_FILE).read_bytes() == first


def test_predict_with_head_writes_every_map_on_the_input_grid(tmp_path, bundled_package, capsys):
    volume = read_volume(DEMO)
    g = volume.geometry
    oblique = type(g)(g.shape, (0.8, 0.6, 1.5), (12.0, -40.0, 3.0), rotation([0.2, 1.0, -0.5], 27.0).ravel())
    source = write_volume(volume.array, oblique, tmp_path / "in.nrrd")
    out = tmp_path / "out"
    assert run_quietly("predict", "--input", str(source), "--output-dir", str(out), "--uncertainty", "segwithu") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "segwithu"
    maps = summary["outputs"]["maps"]
    assert set(maps) == {"ranking", "error_probability", "calibration", "epistemic", "aleatoric"}
    files = [
        summary["outputs"]["segmentation"],
        *summary["outputs"]["probabilities"].values(),
        *summary["outputs"]["calibrated_probabilities"].values(),
        *maps.values(),
    ]
    reference = sitk.ReadImage(str(source))
    for name in files:
        image = sitk.ReadImage(str(out / name))
        assert image.GetSize() == reference.GetSize()
        assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-9)
        assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-9)
        assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-9)
    labels = read_volume(out / "segmentation.nrrd").array
    calibrated = read_volume(out / "calibrated_probability_nodule.nrrd").array
    np.testing.assert_array_equal(labels == 1, calibrated > 0.5)  # same segmentation after tempering
    shown = read_volume(out / "error_probability.nrrd").array
    assert shown.min() >= 0.0 and shown.max() <= 1.0
    ranking = read_volume(out / "ranking.nrrd").array
    # the display map is a monotone function of the ranking map
    order = np.argsort(ranking.ravel())
    assert (np.diff(shown.ravel()[order]) >= -1e-6).all()
    assert read_volume(out / "calibration.nrrd").array.min() >= 0.0


def test_the_ranking_map_flags_the_errors(bundled_package):
    volume = read_volume(DEMO)
    raters = read_volume(sample_path("lidc-nodule-demo-raters.nrrd")).array
    package = bundled_package
    prediction = predict_volume(volume, package, head=load_head(package), device="cpu")
    wrong = prediction.labels != (raters >= 2)
    from SegUncertaintyLib.metrics import auroc

    assert wrong.any() and auroc(prediction.maps["ranking"], wrong) > 0.95
    np.testing.assert_array_equal(prediction.calibrated_probabilities.argmax(0), prediction.labels)


def test_multiclass_backbone_and_head_end_to_end_on_mni152(tmp_path, capsys):
    pytest.importorskip("nilearn")
    from SegUncertaintyLib.data.mni import load_mni152

    package = tmp_path / "mni"
    tiny = "--data mni152 --batch-size 2".split()
    assert (
        run_quietly("train-backbone", "--output", str(package), *tiny, *"--iterations 4 --filters 4,8,16".split()) == 0
    )
    assert run_quietly("train-head", "--model", str(package), *tiny, "--max-epochs", "1") == 0
    template = load_mni152(resolution=2)
    source = write_volume(template.t1.array, template.t1.geometry, tmp_path / "t1.nii.gz")
    out = tmp_path / "out"
    assert run_quietly("predict", "--input", str(source), "--model", str(package), "--output-dir", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "segwithu"
    assert list(summary["outputs"]["calibrated_probabilities"]) == ["csf", "gm", "wm"]
    loaded = load_package(package)
    prediction = predict_volume(template.t1, loaded, head=load_head(loaded), device="cpu")
    assert prediction.calibrated_probabilities.shape == (4, *template.t1.array.shape)
    np.testing.assert_allclose(prediction.calibrated_probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prediction.calibrated_probabilities.argmax(0), prediction.labels)


def test_tap_names_the_backbone_lacks_get_a_clear_error(package_copy, lidc_cache, capsys):
    card = json.loads((package_copy / CARD_NAME).read_text())
    card["taps"] = [{"name": "decoder.stage9", "channels": 32}]
    (package_copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"decoder\.stage9"):
        train_head(package_copy, HeadTrainingConfig(**TINY), lidc_cache, "cpu")
    status = run_quietly(
        "train-head", "--model", str(package_copy), "--cache-dir", str(lidc_cache), "--max-epochs", "1"
    )
    assert status == 1 and "not found in the network" in capsys.readouterr().err


def test_asking_for_segwithu_without_a_head_is_refused(package_copy, tmp_path, capsys):
    args = ["predict", "--input", str(DEMO), "--model", str(package_copy), "--output-dir", str(tmp_path / "out")]
    assert run_quietly(*args, "--uncertainty", "segwithu") == 1
    assert "has no uncertainty head" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert run_quietly(*args) == 0  # auto falls back to the backbone alone
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["uncertainty"] == "none"
