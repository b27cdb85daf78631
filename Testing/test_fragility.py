"""The fragility search on the bundled model: exact tails, the loss bound, where voxels flip, geometry, determinism."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.fragility.config import TRAINABLE, FragilityConfig
from SegUncertaintyLib.fragility.layout import reach_crop
from SegUncertaintyLib.fragility.replay import REPLAY_FILE, build_replay, load_replay
from SegUncertaintyLib.fragility.search import FRAGILITY_MAPS, FragilitySearch
from SegUncertaintyLib.fragility.tail import Tail, crop_inputs, input_scale, tail_spec, trunk_pass
from SegUncertaintyLib.fragility.targets import ball, band_regions, make_targets
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.preprocess import resize, resize_box
from SegUncertaintyLib.progress import Progress
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry, Volume

from .helpers import predict_args, rotation

DEMO = sample_path("lidc-nodule-demo.nrrd")


@pytest.fixture(scope="module")
def network(bundled_package):
    return load_backbone(bundled_package)


@pytest.fixture(scope="module")
def search(bundled_package, network):
    return FragilitySearch(bundled_package, network, load_replay(bundled_package))


@pytest.fixture(scope="module")
def demo_result(bundled_package, network, search):
    volume = read_volume(DEMO)
    reference = predict_volume(volume, bundled_package, network=network, device="cpu")
    return volume, reference, search.run(volume, reference, keep_sample_labels=True)


def sphere(blur_mm: float, shape=(40, 40, 40), radius=6.0) -> Volume:
    """A solid nodule-like sphere (30 HU) in lung parenchyma (-850 HU), its edge blurred by ``blur_mm``."""
    grid = np.indices(shape, dtype=np.float32) - (np.array(shape) / 2)[:, None, None, None]
    image = np.where(np.sqrt((grid**2).sum(0)) <= radius, 30.0, -850.0).astype(np.float32)
    if blur_mm:
        image = ndimage.gaussian_filter(image, blur_mm)
    image += np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    return Volume(image, Geometry(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel()))


@pytest.mark.parametrize("out_shape", [(50, 20, 41), (30, 37, 41), (13, 90, 60)])
def test_resize_box_is_resize_on_the_box(out_shape):
    full = torch.randn(2, 30, 37, 41)
    start, stop = (5, 3, 10), (20, 30, 41)
    box, values = resize_box(full[:, 5:20, 3:30, 10:41], start, full.shape[1:], out_shape)
    assert all(b.stop > b.start for b in box)
    torch.testing.assert_close(values, resize(full, out_shape)[(slice(None), *box)], atol=2e-5, rtol=0)
    # and no more than the box determines: one more voxel each side would need a source outside it
    scale = [s_in / s_out for s_in, s_out in zip(full.shape[1:], out_shape, strict=True)]
    for b, a, z, f in zip(box, start, stop, scale, strict=True):
        assert max((b.start - 1 + 0.5) * f - 0.5, 0) < a or b.start == 0
        assert np.floor((b.stop + 0.5) * f - 0.5) + 1 >= z


NNUNET_FOLDER = (
    Path(__file__).resolve().parent
    / "data/nnunet-lidc-tiny/Dataset901_LIDCNodule/nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres"
)


@pytest.fixture(scope="module")
def nnunet_network():
    pytest.importorskip("dynamic_network_architectures")
    return load_backbone(load_package(NNUNET_FOLDER))


@pytest.mark.parametrize(
    "architecture, trainable",
    [("DynUNet", t) for t in TRAINABLE] + [("nnUNet", "last-conv"), ("nnUNet", "head")],
)
def test_tail_computes_what_the_network_computes_even_on_crops(request, architecture, trainable):
    network = request.getfixturevalue("network" if architecture == "DynUNet" else "nnunet_network")
    windows = torch.randn(2, 1, 48, 48, 48)
    spec = tail_spec(network, architecture, trainable, classes=2)
    logits, inputs = trunk_pass(network, spec, windows)
    tail = Tail(network, spec)
    torch.testing.assert_close(tail.record(*inputs), logits, atol=1e-4, rtol=0)
    scale = input_scale(inputs, (48, 48, 48))
    crops, valid = zip(*(reach_crop(11, 30, 48, spec.reach, f) for f in scale), strict=True)
    with torch.no_grad():
        out = tail(*crop_inputs(inputs, crops, (48, 48, 48)))
    torch.testing.assert_close(
        out[(slice(None), slice(None), *valid)], logits[..., 11:30, 11:30, 11:30], atol=1e-4, rtol=0
    )


def test_nnunet_tails_are_refused_where_the_decoder_hides_the_skip(nnunet_network):
    with pytest.raises(ModelError, match="last-conv or head, not last-block"):
        tail_spec(nnunet_network, "nnUNet", "last-block")


def test_targets_grow_outside_and_shrink_inside_within_the_radius():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[10:20, 10:20, 10:20] = 1
    logits = np.stack([1.0 - labels, labels.astype(float)]).astype(np.float32)
    spacing = (1.0, 1.0, 2.0)  # i, j, k: the k axis is coarse
    targets = make_targets(logits, ["background", "nodule"], (2.0,), spacing)
    grow, shrink = targets["grow nodule 2 mm"], targets["shrink nodule 2 mm"]
    assert not (grow.band & (labels == 1)).any() and (grow.labels[grow.band] == 1).all()
    assert (labels[shrink.band] == 1).all() and (shrink.labels[shrink.band] == 0).all()
    # 2 mm is two voxels in-plane but one along k
    assert grow.band[15, 15, 8] and not grow.band[15, 15, 7] and grow.band[9, 15, 15] and not grow.band[8, 15, 15]
    assert ball(0.5, spacing).sum() == 7  # below the voxel size: the 6-neighbourhood


def test_band_regions_split_far_objects_and_merge_near_ones():
    labels = np.zeros((40, 80, 40), np.uint8)
    labels[15:22, 10:17, 15:22] = 1
    labels[15:22, 60:67, 15:22] = 1
    far = band_regions(labels, 2, 2.0, (1.0, 1.0, 1.0), margin=3)
    assert len(far) == 2
    labels[15:22, 20:27, 15:22] = 1  # 3 voxels from the first: one cluster
    near = band_regions(labels, 2, 2.0, (1.0, 1.0, 1.0), margin=3)
    assert len(near) == 2 and any(b[1].start <= 10 - 5 and b[1].stop >= 27 + 5 for b in near)


def test_adversaries_never_change_the_backbone(bundled_package, network, search):
    before = {k: v.clone() for k, v in network.state_dict().items()}
    volume = sphere(2.0)
    search.run(volume, predict_volume(volume, bundled_package, network=network, device="cpu"))
    after = network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in search.tail.parameters())


def test_replay_reference_is_the_network_s_own_loss(bundled_package, network, search):
    replay = load_replay(bundled_package)
    with torch.no_grad():
        logits = network(replay.images)
    edge, size = search.config.replay_crop, bundled_package.card.patch_size[0]
    centre = slice((size - edge) // 2, (size - edge) // 2 + edge)
    expected = torch.nn.functional.cross_entropy(
        logits[..., centre, centre, centre], replay.labels[:, centre, centre, centre]
    )
    assert search.replay_reference == pytest.approx(float(expected), rel=1e-4)


def test_admissible_snapshots_respect_the_loss_bound(demo_result, search):
    _, _, result = demo_result
    summary = result.summary
    losses = np.array(summary["replay_loss_per_step"])
    assert losses.shape == (search.config.steps, len(summary["adversaries"]))
    bound = summary["replay_loss_reference"] + search.config.slack
    assert summary["replay_loss_bound"] == pytest.approx(bound, abs=1e-6)
    admissible = losses <= bound + 1e-6
    assert summary["admissible_per_adversary"] == admissible.sum(axis=0).tolist()
    assert summary["admissible_snapshots"] == admissible.sum()
    # an adversary never admissible keeps the reference as its sample
    for m in np.flatnonzero(~admissible.any(axis=0)):
        assert np.array_equal(result.sample_labels[1 + m], result.sample_labels[0])


def test_maps_on_the_demo(demo_result):
    volume, reference, result = demo_result
    maps = result.maps
    assert set(maps) == set(FRAGILITY_MAPS)
    assert all(m.shape == volume.geometry.shape for m in maps.values())
    fragile = maps["fragile"].astype(bool)
    assert 0 < fragile.sum() < reference.labels.size // 100
    assert np.array_equal(fragile, maps["flip_mass"] > 0) and np.array_equal(fragile, maps["first_flip"] > 0)
    assert (maps["flip_mass"] <= 1).all() and (maps["first_flip"] <= 1).all()
    # the decomposition: total = aleatoric + epistemic, epistemic >= 0, and outside any change the reference's entropy
    np.testing.assert_allclose(
        maps["fragility_total"], maps["fragility_aleatoric"] + maps["fragility_epistemic"], atol=1e-5
    )
    assert (maps["fragility_epistemic"] >= 0).all()
    # every fragile voxel lies within the widest shell (3 mm) of the reference contour, in physical distance
    inside = reference.labels > 0
    spacing = volume.geometry.spacing[::-1]
    distance = np.where(
        inside, ndimage.distance_transform_edt(inside, spacing), ndimage.distance_transform_edt(~inside, spacing)
    )
    assert distance[fragile].max() <= 3.0 + np.linalg.norm(spacing)
    # outside the ROI boxes no adversary changes anything: the reference's entropy, no epistemic part
    far = np.ones(volume.geometry.shape, bool)
    model_shape = reference.model_geometry.shape
    for box in result.summary["roi_model_grid"]:
        near = np.ones_like(far)
        for axis, ((start, stop), n_in, n_out) in enumerate(zip(box, model_shape, volume.geometry.shape, strict=True)):
            source = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5  # model-grid coordinate of each input voxel
            shape = [1, 1, 1]
            shape[axis] = n_out
            near &= ((source > start - 2) & (source < stop + 1)).reshape(shape)
        far &= ~near
    assert far.sum() > far.size // 2
    p = reference.probabilities
    entropy = -(p * np.log(np.clip(p, 1e-12, 1))).sum(0)
    np.testing.assert_allclose(maps["fragility_total"][far], entropy[far], atol=1e-5)
    assert not maps["fragility_epistemic"][far].any()
    # the samples differ from the reference only where voxels are fragile
    changed = (result.sample_labels != reference.labels[None]).any(axis=0)
    assert changed.any() and not (changed & ~fragile).any()


def test_nothing_to_push_without_a_foreground(bundled_package, network, search):
    volume = Volume(
        np.random.default_rng(1).normal(-850, 10, (40, 40, 40)).astype(np.float32),
        Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel()),
    )
    reference = predict_volume(volume, bundled_package, network=network, device="cpu")
    assert not reference.labels.any()
    result = search.run(volume, reference)
    assert result.summary["adversaries"] == [] and not result.maps["fragile"].any()
    assert not result.maps["fragility_epistemic"].any()


def test_a_blurred_edge_is_more_fragile_than_a_sharp_one(bundled_package, network, search):
    counts = {}
    for blur in (0.0, 2.0):
        volume = sphere(blur)
        reference = predict_volume(volume, bundled_package, network=network, device="cpu")
        assert reference.labels.sum() > 500  # the model segments the sphere
        counts[blur] = search.run(volume, reference).summary["fragile_voxels"]
    assert counts[2.0] > 0 and counts[2.0] > 2 * counts[0.0]


def test_deterministic(bundled_package, network, search):
    volume = sphere(1.0)
    reference = predict_volume(volume, bundled_package, network=network, device="cpu")
    first, second = search.run(volume, reference), search.run(volume, reference)
    assert all(np.array_equal(first.maps[k], second.maps[k]) for k in FRAGILITY_MAPS)


def test_predict_with_fragility_on_an_oblique_anisotropic_grid(capsys, tmp_path):
    volume = read_volume(DEMO)
    g = volume.geometry
    geometry = Geometry(g.shape, (0.7, 0.8, 1.25), (-30.0, 12.5, 77.0), rotation([1.0, -0.4, 0.3], 17.0).ravel())
    source = write_volume(volume.array, geometry, tmp_path / "oblique.nii.gz")
    out = tmp_path / "out"
    args = predict_args(source, out, "--uncertainty", "none", "--fragility", "--fragility-steps", "3")
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(e.get("stage") == "fragility" for e in events) and events[-1]["event"] == "done"
    summary = json.loads((out / "summary.json").read_text())
    fragility = summary["fragility"]
    assert fragility["config"]["steps"] == 3 and fragility["snapshots"] == 3 * len(fragility["adversaries"])
    reference = sitk.ReadImage(str(source))
    for name in FRAGILITY_MAPS:
        image = sitk.ReadImage(str(out / summary["outputs"]["maps"][name]))
        assert image.GetSize() == reference.GetSize()
        assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
        assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-6)
        assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    fragile = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "fragile.nrrd")))
    assert fragile.sum() == fragility["fragile_voxels"] > 0
    # the search ran on the axis-aligned model grid and its maps came back to the right place: on the contour
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nrrd"))) > 0
    spacing = reference.GetSpacing()[::-1]
    distance = np.where(
        inside, ndimage.distance_transform_edt(inside, spacing), ndimage.distance_transform_edt(~inside, spacing)
    )
    assert distance[fragile > 0].max() <= 3.0 + np.linalg.norm(spacing)
    assert fragility["fragile_volume_ml"] == pytest.approx(fragile.sum() * 0.7 * 0.8 * 1.25 / 1000, abs=1e-4)


def test_an_interrupted_search_leaves_no_files(tmp_path):
    class Interrupt(Progress):
        def report(self, stage, fraction, overall, message):
            if stage == "fragility" and fraction > 0.3:
                raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_to_files(DEMO, out, device="cpu", progress=Interrupt(), fragility=FragilityConfig(steps=4))
    assert not out.exists() or not any(out.iterdir())


def test_clear_errors(capsys, tmp_path, bundled_package):
    package = tmp_path / "no-replay"
    shutil.copytree(bundled_package.path, package, ignore=shutil.ignore_patterns("members", REPLAY_FILE))
    card = json.loads((package / "model.json").read_text())
    del card["files"][REPLAY_FILE], card["fragility"]  # a package made without prepare-replay
    (package / "model.json").write_text(json.dumps(card))
    out = tmp_path / "out"
    assert main(predict_args(DEMO, out, "--model", str(package), "--fragility")) == 1
    assert "prepare-replay" in capsys.readouterr().err and not out.exists()
    assert main(predict_args(DEMO, out, "--fragility-steps", "3")) == 1
    assert "need the search" in capsys.readouterr().err
    assert main(predict_args(DEMO, out, "--fragility", "--fragility-radii", "2,-1")) == 1
    assert "radii" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ModelError, match="corrupted or altered"):
        (package / REPLAY_FILE).write_bytes(b"not a replay set")
        card["files"][REPLAY_FILE] = "0" * 64
        card["fragility"] = {"replay": {"file": REPLAY_FILE}}
        (package / "model.json").write_text(json.dumps(card))
        load_replay(load_package(package))


def test_prepare_replay_builds_a_usable_set(tmp_path, bundled_package, lidc_cache):
    package = tmp_path / "package"
    shutil.copytree(bundled_package.path, package, ignore=shutil.ignore_patterns("members", REPLAY_FILE))
    assert (
        main(
            [
                "prepare-replay",
                "--model",
                str(package),
                "--cache-dir",
                str(lidc_cache),
                "--patches",
                "2",
                "--progress",
                "none",
            ]
        )
        == 0
    )
    loaded = load_package(package)
    replay = load_replay(loaded)
    assert replay.images.shape == (2, 1, 48, 48, 48) and replay.labels.shape == (2, 48, 48, 48)
    assert replay.labels.any() and loaded.card.extra["fragility"]["replay"]["patches"] == 2
    with pytest.raises(Exception, match="replay patches"):
        build_replay(loaded, [], patches=2)
