"""Geometry: index <-> LPS/RAS matrices against hand-computed points, resampled grids."""

import numpy as np
import pytest

from SegUncertaintyLib.volume import Geometry, Volume, axis_aligned_geometry


def test_ijk_to_lps_and_ras_match_hand_computed_points():
    # i runs along -x (right), j along +z, k along +y: a permuted, flipped grid.
    direction = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    g = Geometry(shape=(4, 5, 6), spacing=(0.5, 2.0, 3.0), origin=(10.0, -20.0, 30.0), direction=direction.ravel())
    # voxel (i, j, k) = (2, 1, 3): LPS = origin + D @ (2*0.5, 1*2.0, 3*3.0) = (10-1, -20+9, 30+2)
    assert np.allclose(g.ijk_to_physical([2, 1, 3]), [9.0, -11.0, 32.0])
    # RAS flips x and y
    assert np.allclose(g.ijk_to_physical([2, 1, 3], "RAS"), [-9.0, 11.0, 32.0])
    assert np.allclose(g.ijk_to_ras, np.diag([-1, -1, 1, 1]) @ g.ijk_to_lps)
    assert np.allclose(g.ijk_to_ras[:3, 3], [-10.0, 20.0, 30.0])
    assert np.allclose(g.physical_to_ijk([9.0, -11.0, 32.0]), [2, 1, 3])
    assert np.allclose(g.physical_to_ijk([-9.0, 11.0, 32.0], "RAS"), [2, 1, 3])


def test_voxel_volume_and_extent():
    g = axis_aligned_geometry((10, 20, 30), (0.5, 1.0, 2.0))
    assert g.voxel_volume_ml == pytest.approx(0.001)
    assert g.extent_mm == (15.0, 20.0, 20.0)


def test_resampled_grid_keeps_box_and_direction(oblique_geometry):
    g = oblique_geometry
    r = g.resampled((1.0, 1.0, 1.0))
    assert r.direction == g.direction
    assert np.allclose(r.extent_mm, g.extent_mm)
    # the outer corner of voxel (0,0,0) is the same point in both grids
    corner = g.ijk_to_physical([-0.5, -0.5, -0.5])
    assert np.allclose(r.ijk_to_physical([-0.5, -0.5, -0.5]), corner)
    # and so is the far corner
    far = g.ijk_to_physical(np.array(g.shape[::-1]) - 0.5)
    assert np.allclose(r.ijk_to_physical(np.array(r.shape[::-1]) - 0.5), far)
    assert r.shape == (50, 18, 26)  # round(20*2.5), round(28*0.65), round(32*0.8) in k, j, i


def test_invalid_geometry_and_volume_rejected():
    with pytest.raises(ValueError):
        Geometry(shape=(2, 2, 2), spacing=(1, 0, 1), origin=(0, 0, 0), direction=np.eye(3).ravel())
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 3), np.float32), axis_aligned_geometry((2, 2, 2)))


def test_a_cropped_grid_places_its_voxels_where_the_whole_grid_does(oblique_geometry):
    box = (slice(3, 11), slice(5, 20), slice(2, 30))
    cropped = oblique_geometry.cropped(box)
    assert cropped.shape == (8, 15, 28) and cropped.spacing == oblique_geometry.spacing
    ijk = np.array([[0.0, 0.0, 0.0], [27.0, 14.0, 7.0], [4.5, 2.0, 1.0]])
    shifted = ijk + np.array([2.0, 5.0, 3.0])  # (i, j, k) of the box start
    np.testing.assert_allclose(cropped.ijk_to_physical(ijk), oblique_geometry.ijk_to_physical(shifted), atol=1e-9)
    assert oblique_geometry.resized((10, 14, 16)).extent_mm == pytest.approx(oblique_geometry.extent_mm)
