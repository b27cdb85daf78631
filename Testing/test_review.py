"""High-risk regions: components, ranking by expected wrong voxels, sizes, RAS positions, remaining risk."""

import itertools

import numpy as np
import pytest

from SegUncertaintyLib.review.regions import find_regions, remaining_risk


def test_regions_are_ranked_by_expected_errors_with_their_geometry(oblique_geometry):
    risk = np.zeros(oblique_geometry.shape, np.float32)
    risk[2:4, 3:6, 4:8] = 0.6  # 24 voxels, expected 14.4
    risk[10:14, 10:14, 10:14] = 0.9  # 64 voxels, expected 57.6
    risk[10, 10, 10] = 1.0
    risk[18, 25, 30] = 0.7  # one isolated voxel
    fragile = np.zeros(risk.shape, bool)
    fragile[15:17, 2:4, 2:4] = True  # below the threshold but fragile: 8 voxels, expected 0
    fragile[12, 12, 12] = True
    labels, regions = find_regions(risk, oblique_geometry, threshold=0.5, fragile=fragile, min_voxels=2)
    assert [r.voxels for r in regions] == [64, 24, 8]  # the isolated voxel is dropped
    top = regions[0]
    assert top.rank == top.label == 1 and top.max_risk == 1.0
    assert top.expected_errors == pytest.approx(63 * 0.9 + 1.0)
    assert top.mean_risk == pytest.approx(top.expected_errors / 64)
    assert top.fragile_fraction == pytest.approx(1 / 64)
    assert top.box_kji == ((10, 14), (10, 14), (10, 14))
    assert top.volume_ml == pytest.approx(64 * oblique_geometry.voxel_volume_ml)
    # the centre of voxels 10..13 is index 11.5 on every axis, in (i, j, k) for the geometry
    expected = oblique_geometry.ijk_to_physical(np.array([11.5, 11.5, 11.5]), frame="RAS")
    np.testing.assert_allclose(top.centroid_ras, expected, atol=1e-6)
    assert regions[2].expected_errors == 0 and regions[2].fragile_fraction == 1.0
    assert set(np.unique(labels)) == {0, 1, 2, 3} and (labels == 1).sum() == 64 and labels[18, 25, 30] == 0
    assert remaining_risk(regions, set()) == 1.0 and remaining_risk(regions, {1, 2, 3}) == 0.0
    assert remaining_risk(regions, {1}) == pytest.approx(14.4 / (14.4 + top.expected_errors))


def test_no_region_and_bad_input(oblique_geometry):
    labels, regions = find_regions(np.zeros(oblique_geometry.shape), oblique_geometry)
    assert regions == [] and not labels.any() and remaining_risk(regions, set()) == 0.0
    with pytest.raises(ValueError, match="not on the grid"):
        find_regions(np.zeros((2, 2, 2)), oblique_geometry)
    with pytest.raises(ValueError, match="threshold"):
        find_regions(np.zeros(oblique_geometry.shape), oblique_geometry, threshold=1.5)


def test_regions_of_the_bundled_model_on_the_demo(bundled_package):
    from SegUncertaintyLib.inference import predict_volume
    from SegUncertaintyLib.io import read_volume
    from SegUncertaintyLib.resources import sample_path
    from SegUncertaintyLib.segwithu.package import load_head

    volume = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    prediction = predict_volume(volume, bundled_package, head=load_head(bundled_package), device="cpu")
    labels, regions = find_regions(prediction.maps["error_probability"], volume.geometry, threshold=0.3)
    assert regions and all(a.expected_errors >= b.expected_errors for a, b in itertools.pairwise(regions))
    assert labels.max() == len(regions)
    # the worst region touches the segmented nodule's outline
    nodule = np.argwhere(prediction.labels > 0)
    (k0, k1), (j0, j1), (i0, i1) = regions[0].box_kji
    low, high = nodule.min(axis=0), nodule.max(axis=0)
    assert k0 <= high[0] and k1 > low[0] and j0 <= high[1] and j1 > low[1] and i0 <= high[2] and i1 > low[2]


def test_a_review_session_keeps_every_correction_and_survives_a_restart(tmp_path, oblique_geometry):
    from SegUncertaintyLib.errors import InputError
    from SegUncertaintyLib.io import read_volume, write_volume
    from SegUncertaintyLib.review.session import ReviewSession

    segmentation = np.zeros(oblique_geometry.shape, np.uint8)
    segmentation[10:14, 10:14, 10:14] = 1
    original = write_volume(segmentation, oblique_geometry, tmp_path / "segmentation.nrrd")
    before = original.read_bytes()
    risk = np.zeros(oblique_geometry.shape, np.float32)
    risk[9:15, 9:15, 9:15] = 0.6
    risk[2:4, 2:4, 2:4] = 0.8
    _, regions = find_regions(risk, oblique_geometry)
    session = ReviewSession.start(tmp_path / "review", original, regions)
    assert session.remaining_risk() == 1.0 and session.current_path() == original.resolve()
    with pytest.raises(InputError, match="already holds"):
        ReviewSession.start(tmp_path / "review", original, regions)

    corrected = segmentation.copy()
    corrected[9, 10:14, 10:14] = 1  # the reviewer grows the nodule by one slice
    first = session.correct(1, corrected, reviewer="dr-a")
    session.accept(2, reviewer="dr-b")
    again = corrected.copy()
    again[14, 10:14, 10:14] = 1
    second = session.correct(1, again, reviewer="dr-a")

    reopened = ReviewSession.load(tmp_path / "review")  # as after a crash: only what is on disk
    assert reopened.status == {1: "corrected", 2: "accepted"} and reopened.version == 2
    assert reopened.regions == regions and reopened.remaining_risk() == 0.0
    assert [(e["reviewer"], e["region"], e["action"], e["voxels_changed"]) for e in reopened.log] == [
        ("dr-a", 1, "corrected", 16),
        ("dr-b", 2, "accepted", 0),
        ("dr-a", 1, "corrected", 16),
    ]
    assert np.array_equal(read_volume(first).array, corrected) and np.array_equal(reopened.current().array, again)
    assert reopened.current().geometry.is_close(oblique_geometry, atol=1e-9) and second == reopened.current_path()
    assert original.read_bytes() == before  # the original is never written
    with pytest.raises(InputError, match="no region 7"):
        reopened.accept(7)
    with pytest.raises(InputError, match="not on the grid"):
        reopened.correct(1, np.zeros((2, 2, 2), np.uint8))
    assert ReviewSession.load(tmp_path / "review").version == 2  # failed actions saved nothing


def test_region_figures_are_ndimages_to_the_bit_on_a_map_with_many_regions(oblique_geometry):
    from scipy import ndimage

    rng = np.random.default_rng(7)
    risk = ndimage.gaussian_filter(rng.random(oblique_geometry.shape).astype(np.float32), 1.0)
    risk = (risk - risk.min()) / (risk.max() - risk.min())
    fragile = rng.random(risk.shape) > 0.995
    labels, regions = find_regions(risk, oblique_geometry, threshold=0.6, fragile=fragile)
    assert len(regions) > 20
    index = [r.label for r in regions]
    expected = ndimage.sum_labels(risk, labels, index)
    assert [r.expected_errors for r in regions] == list(expected)
    assert [r.max_risk for r in regions] == [float(v) for v in ndimage.maximum(risk, labels, index)]
    assert [r.voxels for r in regions] == [int(v) for v in ndimage.sum_labels(np.ones_like(risk), labels, index)]
    assert [r.fragile_fraction * r.voxels for r in regions] == pytest.approx(ndimage.sum_labels(fragile, labels, index))
    centres = ndimage.center_of_mass(np.ones_like(risk), labels, index)
    for region, centre in zip(regions, centres, strict=True):
        ras = oblique_geometry.ijk_to_physical(np.asarray(centre)[::-1], frame="RAS")
        assert region.centroid_ras == tuple(float(c) for c in ras)
