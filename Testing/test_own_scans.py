"""The head on the user's own scans: without labels (train-head --images) and from corrections (--from-reviews)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from SegUncertaintyLib.errors import DataError, SegUncertaintyError
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.review.session import ReviewSession
from SegUncertaintyLib.segwithu.scan_training import batch_metrics
from SegUncertaintyLib.segwithu.scans import Scan, read_reviews, read_scans
from SegUncertaintyLib.segwithu.self_targets import Corruptions, SelfLabeller, corrupt
from SegUncertaintyLib.segwithu.training import HeadTrainingConfig, fit_head, freeze
from SegUncertaintyLib.volume import Geometry, Volume

from .helpers import run_quietly

DEMO = sample_path("lidc-nodule-demo.nrrd")
NOTHING = Corruptions(flip=False, contrast=0.0, brightness=0.0, noise=0.0, blur=0.0)
TINY = ["--max-epochs", "2", "--batch-size", "2"]


def test_the_flips_are_undone_on_the_labels():
    """A voxel-wise network commutes with flips: its labels of a flipped copy, flipped back, are its labels."""
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 3, 1).eval()
    x = torch.randn(6, 1, 5, 7, 9)
    labeller = SelfLabeller(network, Corruptions(contrast=0.0, brightness=0.0, noise=0.0, blur=0.0), seed=0)
    _, axes = corrupt(x, labeller.corruptions, torch.Generator().manual_seed(0))
    assert len({dims for dims in axes}) > 1  # the draws flip along different axes
    assert torch.equal(labeller(x), network(x).argmax(1))


def test_the_corruptions_are_read_from_text():
    assert Corruptions.parse("") == Corruptions()
    assert Corruptions.parse(" noise=0.2 ,flip=No,blur=1") == Corruptions(flip=False, noise=0.2, blur=1.0)
    for wrong in ("noise", "sharpness=1", "flip=maybe", "blur=big", "contrast=1.5", "noise=-0.1"):
        with pytest.raises(SegUncertaintyError):
            Corruptions.parse(wrong)


def test_label_free_patches_hold_the_structure_more_often_unless_told_otherwise():
    assert HeadTrainingConfig().resolved(labelled=True).foreground_fraction == 0.33
    assert HeadTrainingConfig().resolved(labelled=False).foreground_fraction == 0.66
    assert HeadTrainingConfig(foreground_fraction=0.5).resolved(labelled=False).foreground_fraction == 0.5
    with pytest.raises(SegUncertaintyError, match="foreground fraction"):
        HeadTrainingConfig(foreground_fraction=-0.1)


def test_with_members_each_sample_is_labelled_by_one_of_the_networks():
    torch.manual_seed(0)
    backbone, member = torch.nn.Conv3d(1, 2, 1).eval(), torch.nn.Conv3d(1, 2, 1).eval()
    with torch.no_grad():
        member.weight.copy_(-backbone.weight)  # the member labels every voxel the other way
        member.bias.copy_(-backbone.bias)
    x = torch.randn(16, 1, 4, 5, 6)
    labels = SelfLabeller(backbone, NOTHING, seed=0, members=[member])(x)
    own, other = backbone(x).argmax(1), member(x).argmax(1)
    by_backbone = [bool(torch.equal(labels[b], own[b])) for b in range(16)]
    assert all(by_backbone[b] or torch.equal(labels[b], other[b]) for b in range(16))
    assert 0 < sum(by_backbone) < 16  # both networks label some samples
    reseeded = SelfLabeller(backbone, NOTHING, seed=0, members=[member]).reseeded(0)
    assert torch.equal(reseeded(x), labels)  # the same draws from the same seed


def test_without_corruption_the_labels_are_the_backbones_own(bundled_package):
    backbone = freeze(load_backbone(bundled_package))
    x = torch.from_numpy(read_volume(DEMO).array[None, None, :48, :48, :48].astype(np.float32) / 500.0)
    assert torch.equal(SelfLabeller(backbone, NOTHING, seed=0)(x), backbone(x).argmax(1))
    corrupted, _ = corrupt(x, Corruptions(flip=False), torch.Generator().manual_seed(1))
    assert not torch.equal(corrupted, x)  # the default strengths do change the image


def test_a_head_trains_on_unlabelled_scans_without_any_label(tmp_path, monkeypatch):
    """The done-when of the issue on an nnU-Net-format model: a head and the fragility search, no label at all."""
    import SegUncertaintyLib.data.datasets as datasets

    def no_labels(*args, **kwargs):
        raise AssertionError("a labelled data set was read")

    monkeypatch.setattr(datasets, "load_dataset_cases", no_labels)
    pytest.importorskip("dynamic_network_architectures")
    from .test_nnunet import FOLDER

    model = tmp_path / FOLDER.name
    shutil.copytree(FOLDER, model)
    scans = tmp_path / "scans"
    scans.mkdir()
    demo = read_volume(DEMO)
    write_volume(demo.array, demo.geometry, scans / "a.nrrd")
    coarse = Geometry(demo.geometry.shape, (1.3, 0.9, 1.1), demo.geometry.origin, demo.geometry.direction)
    write_volume(np.flip(demo.array, 0).copy(), coarse, scans / "b.nii.gz")  # another grid than the model's
    (scans / "broken.nrrd").write_bytes(b"NRRD0004\nnot a volume")

    weaker = ["--corruptions", "noise=0.05, flip=no"]
    assert run_quietly("train-head", "--model", str(model), "--images", str(scans), *TINY, *weaker) == 0
    head = json.loads((model / "model.json").read_text())["head"]
    assert head["training"]["config"]["corruptions"] == {**Corruptions().to_dict(), "noise": 0.05, "flip": False}
    assert head["training"]["config"]["foreground_fraction"] == 0.66  # the label-free default, as used
    data = head["training"]["data"]
    assert data["source"] == "unlabelled scans" and "no labels" in data["reference"]
    assert data["scans"] == ["a.nrrd", "b.nii.gz"] and "broken.nrrd" in data["skipped"]
    assert "no labels" in head["validation"]["voxel_set"] and head["error_probability"]["slope"] > 0

    assert run_quietly("prepare-replay", "--model", str(model), "--images", str(scans), "--patches", "2") == 0
    out = tmp_path / "out"
    fragility = ["--fragility", "--fragility-steps", "2", "--fragility-radii", "2"]
    assert (
        run_quietly("predict", "--input", str(DEMO), "--model", str(model), "--output-dir", str(out), *fragility) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "segwithu" and summary["fragility"] is not None
    ranking = read_volume(out / "ranking.nrrd")
    assert ranking.geometry == demo.geometry and np.isfinite(ranking.array).all() and ranking.array.std() > 0


def test_the_label_free_head_learns_where_the_backbone_flips(bundled_package):
    """On real scans, the head's ranking is highest where corrupted passes disagree with the clean one."""
    volume = read_volume(DEMO)
    scans = [Scan.of(f"demo-{n}", Volume(np.roll(volume.array, 3 * n, axis=2), volume.geometry)) for n in range(3)]
    backbone = freeze(load_backbone(bundled_package))
    torch.manual_seed(0)
    config = HeadTrainingConfig(max_epochs=3, batch_size=2, validation_fraction=0.34)
    fitted = fit_head(bundled_package, backbone, scans, config, torch.device("cpu"))
    metrics, _, errors = batch_metrics(fitted.head, fitted.validation_batches)
    assert errors.any() and metrics["auroc_ranking"] > 0.9  # the targets are the backbone's own flips


def _reviewed_run(root: Path, name: str, model: str, correct: bool) -> Path:
    """A predict run and its review session, as the Slicer module keeps them (<run>/outputs, <run>/review)."""
    run = root / name
    result = predict_to_files(DEMO, run / "outputs", model, "cpu")
    regions = result.regions()
    session = ReviewSession.start(run / "review", result.path(result.summary.outputs.segmentation), regions)
    if correct:
        labels = read_volume(result.path(result.summary.outputs.segmentation), allow_constant=True).array
        corrected = ndimage.binary_dilation(labels > 0, iterations=2).astype(np.uint8)  # the reviewer grows it
        session.correct(regions[0].label, corrected, reviewer="test")
    return run


def test_corrections_teach_the_head(tmp_path):
    model = tmp_path / "pkg"
    shutil.copytree(load_package("lidc-nodule").path, model)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copyfile(DEMO, scans / "demo.nrrd")
    # a head that has seen little (one label-free epoch on one scan): the corrections have much to teach it
    assert run_quietly("train-head", "--model", str(model), "--images", str(scans), "--max-epochs", "1") == 0
    card = json.loads((model / "model.json").read_text())
    assert "quality" not in card and "guarantees" not in card  # fitted on the previous head's maps: removed
    reviews = tmp_path / "reviews"
    for name in ("one", "two"):
        _reviewed_run(reviews, name, str(model), correct=True)
    _reviewed_run(reviews, "untouched", str(model), correct=False)
    gone = _reviewed_run(reviews, "moved", str(model), correct=True)
    (gone / "outputs" / "summary.json").unlink()
    before = (model / "head.safetensors").read_bytes()

    scans, skipped = read_reviews(reviews)
    assert [s.case_id for s in scans] == ["one", "two"]
    assert skipped["untouched/review"] == "no region was reviewed yet" and "summary.json" in skipped["moved/review"]
    segmentation = read_volume(reviews / "one" / "outputs" / "segmentation.nrrd", allow_constant=True).array
    assert (scans[0].labels.sum() > (segmentation > 0).sum()) and scans[0].geometry == read_volume(DEMO).geometry

    weaker = ["--corruptions", "noise=0.05"]  # they shape label-free targets only
    assert run_quietly("train-head", "--model", str(model), "--from-reviews", str(reviews), *TINY, *weaker) == 1
    outside = ["--foreground-fraction", "1.5"]
    assert run_quietly("train-head", "--model", str(model), "--from-reviews", str(reviews), *TINY, *outside) == 1
    assert run_quietly("train-head", "--model", str(model), "--from-reviews", str(reviews), *TINY) == 0
    card = json.loads((model / "model.json").read_text())
    assert card["head"]["training"]["config"]["foreground_fraction"] == 0.33  # corrections are labels
    data = card["head"]["training"]["data"]
    assert data["source"] == "review sessions" and data["scans"] == ["one", "two"]
    assert "--images" in data["started_from"]  # it went on from the package's (label-free) head
    assert (model / "head.safetensors").read_bytes() != before


def test_unreadable_scans_and_mixed_labels_are_refused(tmp_path, bundled_package):
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\nnot a volume")
    with pytest.raises(DataError, match="none of 1 volume"):
        read_scans(tmp_path)
    volume = read_volume(DEMO)
    mixed = [Scan.of("a", volume), Scan.of("b", volume, np.zeros(volume.array.shape, np.uint8))]
    backbone = freeze(load_backbone(bundled_package))
    with pytest.raises(DataError, match="not on both"):
        fit_head(bundled_package, backbone, mixed, HeadTrainingConfig(max_epochs=1), torch.device("cpu"))


def test_validation_without_an_error_has_no_ranking_figures(bundled_package):
    """A review that changed nothing gives validation patches without errors: no AUROC to state, not NaN."""
    from SegUncertaintyLib.segwithu.package import load_head
    from SegUncertaintyLib.segwithu.training import backbone_outputs

    backbone, head = freeze(load_backbone(bundled_package)), load_head(bundled_package)
    x = torch.from_numpy(read_volume(DEMO).array[None, None, :48, :48, :48].astype(np.float32) / 500.0)
    logits, features = backbone_outputs(backbone, head.tap_names, x)
    metrics, _, errors = batch_metrics(head, [(logits, features, logits.argmax(1))])
    assert not errors.any() and metrics["auroc_ranking"] is None and metrics["aurc_max_softmax"] is None
    assert metrics["auroc_ranking_roi"] is None
    assert metrics["error_rate"] == 0.0 and np.isfinite(metrics["ece_calibrated"])


def test_a_head_that_ranks_the_held_out_corrections_worse_is_not_kept(tmp_path, monkeypatch):
    """The training is real; only its result is spoiled (noise on its weights), as too few corrections can do."""
    import SegUncertaintyLib.segwithu.scan_training as scan_training
    from SegUncertaintyLib.segwithu.scan_training import train_head_on_scans

    def spoiled(*args, **kwargs):
        fitted = fit_head(*args, **kwargs)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in fitted.head.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.abs().mean() * 3)
        return fitted

    monkeypatch.setattr(scan_training, "fit_head", spoiled)
    model = tmp_path / "pkg"
    shutil.copytree(load_package("lidc-nodule").path, model)
    before = {name: (model / name).read_bytes() for name in ("model.json", "head.safetensors")}
    _reviewed_run(tmp_path / "reviews", "one", str(model), correct=True)
    scans, _ = read_reviews(tmp_path / "reviews")
    result = train_head_on_scans(model, scans, HeadTrainingConfig(max_epochs=1), "cpu")
    figures = result["validation"]
    trained, previous = figures["trained"]["auroc_ranking_roi"], figures["previous"]["auroc_ranking_roi"]
    assert result["kept_previous"] and trained < previous
    assert {name: (model / name).read_bytes() for name in before} == before  # the package as it was
