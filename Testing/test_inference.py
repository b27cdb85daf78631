"""The inference engine on real data with the bundled trained backbone."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.inference import (
    argmax_labels,
    backbone_window,
    count_windows,
    predict_volume,
    resolve_device,
    sliding_window_maps,
)
from SegUncertaintyLib.io import geometry_of, read_volume, to_sitk
from SegUncertaintyLib.metrics import dice
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import ModelPackage
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry, Volume

from .helpers import rotation


@pytest.fixture(scope="module")
def demo():
    return read_volume(sample_path("lidc-nodule-demo.nrrd"))


@pytest.fixture(scope="module")
def demo_raters():
    return read_volume(sample_path("lidc-nodule-demo-raters.nrrd")).array


@pytest.fixture(scope="module")
def network(bundled_package):
    return load_backbone(bundled_package)


def test_demo_prediction_is_on_the_input_grid_and_finds_the_nodule(demo, demo_raters, bundled_package, network):
    prediction = predict_volume(demo, bundled_package, network=network, device="cpu")
    assert prediction.geometry == demo.geometry
    assert prediction.probabilities.shape == (2, *demo.geometry.shape)
    assert prediction.probabilities.dtype == np.float32
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prediction.labels, prediction.probabilities.argmax(0))
    # the model grid is 1 mm over the same box
    assert np.allclose(prediction.model_geometry.spacing, 1.0, atol=0.02)
    assert np.allclose(prediction.model_geometry.extent_mm, demo.geometry.extent_mm)
    # real quality: the held-out nodule is found and agrees with the raters' majority
    majority = demo_raters >= 2
    assert dice(prediction.labels == 1, majority) > 0.8
    # the uncertain band is where raters disagree, not in the lung far away
    p = prediction.probabilities[1]
    disagreement = (demo_raters > 0) & (demo_raters < 4)
    assert np.mean((p > 0.1) & (p < 0.9) & ~disagreement & (demo_raters == 0)) < 0.01


def _stored_as(volume: Volume, image: sitk.Image) -> Volume:
    return Volume(sitk.GetArrayFromImage(image).astype(np.float32), geometry_of(image))


def _on_grid(labels: np.ndarray, geometry: Geometry, reference: Geometry) -> np.ndarray:
    """A label map moved onto ``reference``'s voxels (nearest), by SimpleITK, not by the engine."""
    blank = to_sitk(np.zeros(reference.shape, np.uint8), reference)
    moved = sitk.Resample(to_sitk(labels, geometry), blank, sitk.Transform(), sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(moved)


def _centroid_mm(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    return geometry.ijk_to_physical(np.argwhere(labels == 1)[:, ::-1].astype(np.float64)).mean(axis=0)


def test_the_answer_does_not_depend_on_how_the_image_is_stored(demo, bundled_package, network):
    # the same physical image with its axes permuted and reversed (SimpleITK keeps it in place): the same answer
    image = to_sitk(demo.array, demo.geometry)
    stored = _stored_as(demo, sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True]))
    assert not np.allclose(stored.geometry.direction, demo.geometry.direction)
    a = predict_volume(demo, bundled_package, network=network, device="cpu")
    b = predict_volume(stored, bundled_package, network=network, device="cpu")
    assert b.geometry == stored.geometry and b.labels.shape == stored.geometry.shape
    assert b.model_geometry.is_close(a.model_geometry)
    back = _on_grid(b.labels, b.geometry, demo.geometry)
    assert np.count_nonzero(back != a.labels) <= 2  # float rounding at p = 0.5


def test_an_oblique_thick_slice_storage_finds_the_same_nodule(demo, bundled_package, network):
    # the physical image resampled onto an oblique 0.7 x 0.9 x 2.5 mm grid: the network still sees the patient's
    # axes, so the nodule stays where it is (the voxel frame moved it by 1.7-1.9 mm)
    g = demo.geometry
    centre = g.ijk_to_physical(np.asarray(g.shape[::-1], dtype=np.float64) / 2 - 0.5)
    direction = rotation([1.0, 0.4, 0.2], 25.0)
    spacing = np.array([0.7, 0.9, 2.5])
    shape = tuple(int(n) for n in np.round(52.0 / spacing)[::-1])  # a 52 mm box: inside the demo's 70 mm
    origin = centre - direction @ (spacing * (np.asarray(shape[::-1]) / 2 - 0.5))
    oblique = Geometry(shape, tuple(spacing), tuple(origin), tuple(direction.ravel()))
    blank = to_sitk(np.zeros(shape, np.float32), oblique)
    resampled = sitk.Resample(to_sitk(demo.array, g), blank, sitk.Transform(), sitk.sitkLinear)
    a = predict_volume(demo, bundled_package, network=network, device="cpu")
    b = predict_volume(_stored_as(demo, resampled), bundled_package, network=network, device="cpu")
    assert b.geometry.is_close(oblique) and b.grid.oblique
    assert np.allclose(b.model_geometry.direction_matrix, np.eye(3))
    shift = np.linalg.norm(_centroid_mm(b.labels, b.geometry) - _centroid_mm(a.labels, g))
    assert shift < 0.5
    assert dice(b.labels == 1, _on_grid(a.labels, g, b.geometry) == 1) > 0.9


def test_anisotropic_input_is_resampled_to_model_spacing_and_back(demo, bundled_package, network):
    # the same scene with 2.5 mm slices: the nodule volume stays close (partial volume aside)
    g = demo.geometry
    thick = torch.nn.functional.interpolate(
        torch.from_numpy(demo.array)[None, None], size=(28, 100, 100), mode="trilinear", align_corners=False
    )[0, 0].numpy()
    coarse = Geometry((28, 100, 100), (0.7, 0.7, 2.5), g.origin, g.direction)
    fine = predict_volume(demo, bundled_package, network=network, device="cpu")
    rough = predict_volume(Volume(thick, coarse), bundled_package, network=network, device="cpu")
    assert rough.probabilities.shape == (2, 28, 100, 100)
    assert rough.model_geometry.shape == fine.model_geometry.shape
    v_fine = (fine.labels == 1).sum() * g.voxel_volume_ml
    v_rough = (rough.labels == 1).sum() * coarse.voxel_volume_ml
    assert v_rough == pytest.approx(v_fine, rel=0.15)


def test_sliding_window_visits_every_window_and_returns_taps(bundled_package, network):
    image = torch.randn(1, 70, 60, 50)
    calls = []

    def progress(stage, fraction, message=None):
        calls.append(fraction)

    maps = sliding_window_maps(
        backbone_window(network, ["bottleneck"]), image, (48, 48, 48), overlap=0.5, sw_batch_size=1, progress=progress
    )
    logits, features = maps["logits"], {"bottleneck": maps["tap:bottleneck"]}
    assert logits.shape == (2, 70, 60, 50)
    assert len(calls) == count_windows((70, 60, 50), (48, 48, 48), 0.5) == 2 * 2 * 2
    assert calls[-1] == 1.0
    filters = bundled_package.card.architecture["args"]["filters"]
    # features are blended at their own scale (1/8 here)
    assert features["bottleneck"].shape[0] == filters[-1]
    assert features["bottleneck"].shape[1:] == (70 // 8, 60 // 8, 50 // 8)


def test_small_volume_is_padded_to_the_patch(bundled_package, network, demo):
    crop = Volume(
        demo.array[20:40, 30:70, 30:70].copy(),
        Geometry((20, 40, 40), demo.geometry.spacing, demo.geometry.origin, demo.geometry.direction),
    )
    prediction = predict_volume(crop, bundled_package, network=network, device="cpu")
    assert prediction.labels.shape == (20, 40, 40)


def test_model_with_other_input_channels_is_refused(bundled_package, demo):
    card = bundled_package.card
    two_channel = ModelPackage(bundled_package.path, type(card)(**{**card.__dict__, "in_channels": 2}))
    with pytest.raises(ModelError, match="expects 2 input channels"):
        predict_volume(demo, two_channel, device="cpu")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")


def test_argmax_labels_is_torch_argmax_with_ties_to_the_lower_class():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 37, 9, 11, generator=generator)
    scores[2, :20] = scores[1, :20]  # ties between classes 1 and 2
    scores[:, 30:] = 0.5  # all classes tied
    for view in (scores, scores.permute(0, 1, 3, 2)):  # contiguous or not, as the network grid gives it
        assert torch.equal(argmax_labels(view, slab=8), view.argmax(dim=0).to(torch.uint8))
