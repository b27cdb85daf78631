"""A SegWithU head for a whole-volume network: deepbet on real labelled head MRIs."""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage

from SegUncertaintyLib.data.brains import load_brain_cases, prepare_brains
from SegUncertaintyLib.data.mri_augment import augment_head
from SegUncertaintyLib.errors import InputError, ModelError
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.metrics import dice
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.segwithu.whole_volume import CropSampler, network_view

from .helpers import run_quietly


@pytest.fixture(scope="module")
def itk_head():
    brain = read_volume(sample_path("itk-t1-head-brain.nii.gz")).array > 0
    return read_volume(sample_path("itk-t1-head.nii.gz")), brain


@pytest.fixture(scope="module")
def deepbet():
    pytest.importorskip("nibabel")
    try:
        return load_package("deepbet"), load_backbone(load_package("deepbet")).eval()
    except ModelError as exc:  # the deepbet wheel is a dev extra
        pytest.skip(str(exc))


def test_augmented_acquisitions_keep_the_grid_and_move_the_mask_only_by_rotation(itk_head):
    volume, brain = itk_head
    image, mask = augment_head(volume.array, brain, np.random.default_rng(3), probability=1.0)
    again, _ = augment_head(volume.array, brain, np.random.default_rng(3), probability=1.0)
    assert image.shape == mask.shape == volume.array.shape and image.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(image, again)  # the generator is the only randomness
    assert not np.array_equal(mask, brain) and dice(mask, brain) > 0.8  # turned, not deformed
    assert abs(int(mask.sum()) - int(brain.sum())) < 0.03 * brain.sum()
    assert (image >= 0).all()  # Rician noise keeps a magnitude image non-negative

    unturned, same = augment_head(volume.array, brain, np.random.default_rng(4), max_degrees=0.0, probability=1.0)
    np.testing.assert_array_equal(same, brain)
    # the bias field, contrast and noise change intensities inside the brain, but keep their order roughly
    inside = brain & (volume.array > 0)
    correlation = np.corrcoef(volume.array[inside], unturned[inside])[0, 1]
    assert 0.3 < correlation < 0.999


def test_the_network_view_puts_the_reference_on_the_logits_grid(deepbet, itk_head):
    package, network = deepbet
    volume, brain = itk_head
    view = network_view(volume, brain.astype(np.uint8), package, network, ["up3", "conv"], torch.device("cpu"))
    assert view.logits.shape == (2, 256, 256, 256) and view.logits.dtype == torch.float16
    assert [tuple(f.shape) for f in view.features] == [(16, 64, 64, 64), (8, 128, 128, 128)]
    predicted = view.logits.float().argmax(0).numpy() == 1
    assert dice(predicted, view.labels.numpy() == 1) > 0.95  # deepbet's own Dice on this head, in its space
    assert view.labels[tuple(view.surface.T)].any() and len(view.surface) > 1000

    sampler = CropSampler([view], 70, 1.0, np.random.default_rng(0))
    assert sampler.crop == 68 and sampler.step == 4  # a multiple of the coarsest tap's stride
    corner = sampler.corner(view)
    assert (corner % 4 == 0).all()
    logits, features, labels = sampler.cut(view, corner)
    assert logits.shape == (2, 68, 68, 68) and labels.shape == (68, 68, 68)
    assert [tuple(f.shape) for f in features] == [(16, 17, 17, 17), (8, 34, 34, 34)]
    k, j, i = corner // 4
    torch.testing.assert_close(features[0], view.features[0][:, k : k + 17, j : j + 17, i : i + 17])
    assert 0 < labels.float().mean() < 1  # centred on the surface: brain and background


def test_prepare_brains_adds_colin27_and_refuses_a_wrong_folder(tmp_path, capsys):
    templates = tmp_path / "templates"
    templates.mkdir()
    from SegUncertaintyLib.cli import main

    prepare = ["prepare-data", "brains", "--mricron", str(templates), "--cache-dir", str(tmp_path)]
    prepare += ["--progress", "none"]
    assert main(prepare) == 1
    assert "ch2.nii.gz is not in" in capsys.readouterr().err
    (templates / "ch2.nii.gz").write_bytes(b"not a volume")
    shutil.copyfile(sample_path("itk-t1-head-brain.nii.gz"), templates / "ch2bet.nii.gz")
    with pytest.raises(InputError, match="cannot read"):
        prepare_brains(templates, tmp_path)
    assert not (tmp_path / "brains").exists()  # nothing copied from a broken folder
    shutil.copyfile(sample_path("itk-t1-head.nii.gz"), templates / "ch2.nii.gz")
    assert main(prepare) == 0
    cases = {c.case_id: c for c in load_brain_cases(tmp_path, "calibration")}
    assert set(cases) == {"mni152", "itk-t1-head", "colin27"}
    np.testing.assert_array_equal(cases["colin27"].raters[0], cases["itk-t1-head"].raters[0])


def test_train_a_head_for_deepbet_then_predict_with_it(deepbet, itk_head, tmp_path):
    package, _ = deepbet
    folder = tmp_path / "deepbet"
    folder.mkdir()
    card = json.loads((package.path / "model.json").read_text())
    card.pop("head", None)  # start from the bare network; train-head writes a head of its own
    card["files"].pop("head.safetensors", None)
    (folder / "model.json").write_text(json.dumps(card))
    small = ["--acquisitions", "1", "--validation-acquisitions", "1", "--crop", "48", "--batch-size", "1"]
    small += ["--max-epochs", "2", "--cache-dir", str(tmp_path / "cache"), "--calibration-limit", "2"]
    assert run_quietly("train-head", "--model", str(folder), "--data", "brains", *small) == 0
    head = json.loads((folder / "model.json").read_text())["head"]
    assert head["training"]["data"]["subjects"] == ["mni152", "itk-t1-head"]
    assert head["training"]["data"]["fit_acquisitions"] == 2 and head["validation"]["cases"] == 2
    assert "held_out" not in head  # every split holds the same subjects: held-out figures are leave-one-subject-out
    assert head["error_probability"]["slope"] > 0

    out = tmp_path / "out"
    source = sample_path("itk-t1-head.nii.gz")
    assert run_quietly("predict", "--input", str(source), "--output-dir", str(out), "--model", str(folder)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "segwithu"
    volume, _ = itk_head
    risk = read_volume(out / "error_probability.nrrd")
    assert risk.geometry == volume.geometry
    brain = read_volume(out / "segmentation.nrrd").array == 1
    calibrated = read_volume(out / "calibrated_probability_brain.nrrd").array
    np.testing.assert_array_equal(calibrated > 0.5, brain)  # tempering never changes the segmentation
    surface = brain & ~ndimage.binary_erosion(brain)
    far = ~ndimage.binary_dilation(brain, iterations=5)
    assert risk.array[surface].mean() > 2 * risk.array[far].mean()  # the risk sits on the outline


def test_predict_with_the_bundled_deepbet_head_writes_every_map(deepbet, itk_head, tmp_path):
    from SegUncertaintyLib.metrics import auroc, region_around

    volume, brain = itk_head
    out = tmp_path / "out"
    source = sample_path("itk-t1-head.nii.gz")
    assert run_quietly("predict", "--input", str(source), "--output-dir", str(out), "--model", "deepbet") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] == "segwithu"  # the default once the package has a head
    for name in ("ranking", "error_probability", "calibration", "epistemic", "aleatoric"):
        assert read_volume(out / summary["outputs"]["maps"][name]).geometry == volume.geometry
    labels = read_volume(out / "segmentation.nrrd").array == 1
    assert dice(labels, brain) > 0.95
    risk = read_volume(out / "error_probability.nrrd").array
    roi = region_around(np.stack([labels, brain]), 3.0, volume.geometry.spacing)
    # the ITK head is one of the head's training subjects: a regression guard, not a held-out figure
    assert auroc(risk[roi], (labels != brain)[roi]) > 0.85
