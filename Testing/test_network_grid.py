"""The model grid and the way there and back: checked against SimpleITK's own resampling."""

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegUncertaintyLib.axis_order import AxisOrder
from SegUncertaintyLib.io import geometry_of, to_sitk
from SegUncertaintyLib.model.package import ModelPackage
from SegUncertaintyLib.network_grid import NetworkGrid
from SegUncertaintyLib.volume import Geometry, axis_aligned_geometry

from .helpers import oblique_grid


def _with_frame(package: ModelPackage, frame: str) -> ModelPackage:
    card = package.card
    return ModelPackage(
        package.path, type(card)(**{**card.__dict__, "inference": replace(card.inference, frame=frame)})
    )


def _smooth(geometry: Geometry) -> torch.Tensor:
    """A smooth function of the physical position, sampled at the voxel centres of ``geometry``."""
    kji = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), -1).reshape(-1, 3)
    x, y, z = geometry.ijk_to_physical(kji[:, ::-1].astype(np.float64)).T
    return torch.from_numpy((np.sin(x / 9.0) + np.cos(y / 11.0) + z / 40.0).reshape(geometry.shape)).float()[None]


def test_axis_order_geometry_is_simpleitks_permute_and_flip():
    grid = oblique_grid()
    image = to_sitk(np.random.default_rng(0).random(grid.shape).astype(np.float32), grid)
    stored = sitk.Flip(sitk.PermuteAxes(image, [1, 2, 0]), [True, True, False])
    source = geometry_of(stored)
    order = AxisOrder.for_geometry(source, "LPS")
    moved = order.geometry(source)
    values = order.to_network(torch.from_numpy(sitk.GetArrayFromImage(stored))[None])[0].numpy()
    back = sitk.Resample(to_sitk(values, moved), image, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    # a box of the reordered array is the reordered box of the stored array
    box = (slice(1, 3), slice(0, 4), slice(2, 5))
    stored_box = order.array_box(box, source.shape)
    piece = torch.from_numpy(sitk.GetArrayFromImage(stored)[stored_box])[None]
    np.testing.assert_array_equal(order.to_network(piece)[0].numpy(), values[box])


def test_every_storage_of_an_axis_aligned_image_gets_one_model_grid(bundled_package):
    image = to_sitk(
        np.zeros((20, 24, 28), np.float32), axis_aligned_geometry((20, 24, 28), (0.7, 0.8, 2.5), (3, -4, 9))
    )
    grids = [
        NetworkGrid.for_input(geometry_of(stored), bundled_package).geometry
        for stored in (image, sitk.PermuteAxes(image, [2, 0, 1]), sitk.Flip(image, [True, False, True]))
    ]
    assert all(g.is_close(grids[0], atol=1e-9) for g in grids)
    # the voxel frame (nnU-Net's) keeps the stored axes
    voxel = NetworkGrid.for_input(
        geometry_of(sitk.PermuteAxes(image, [2, 0, 1])), _with_frame(bundled_package, "voxel")
    )
    assert not voxel.geometry.is_close(grids[0])


def test_oblique_grid_is_covered_and_resampled_both_ways(bundled_package):
    source = oblique_grid()
    grid = NetworkGrid.for_input(source, bundled_package)
    assert grid.oblique and np.allclose(grid.geometry.direction_matrix, np.eye(3))
    # every input voxel centre lies inside the model grid's box
    inside = grid.geometry.physical_to_ijk(source.ijk_to_physical(np.argwhere(np.ones(source.shape))[:, ::-1]))
    assert (inside >= -0.5).all() and (inside <= np.asarray(grid.geometry.shape[::-1]) - 0.5).all()
    # to the model grid: SimpleITK's linear resampling of the same values (inside the input's box)
    values = _smooth(source)
    ours = grid.to_grid(values)[0].numpy()
    blank = to_sitk(np.zeros(grid.geometry.shape, np.float32), grid.geometry)
    resampled = sitk.Resample(to_sitk(values[0].numpy(), source), blank, sitk.Transform(), sitk.sitkLinear, np.nan)
    theirs = sitk.GetArrayFromImage(resampled)
    known = ~np.isnan(theirs)
    assert known.mean() > 0.3
    np.testing.assert_allclose(ours[known], theirs[known], atol=1e-4)
    # and back: a smooth field comes back to within the trilinear error at 1 mm
    back = grid.to_input(_smooth(grid.geometry))
    assert float((back - values).abs().max()) < 0.02


@pytest.mark.parametrize(
    "box", [(slice(5, 15), slice(10, 20), slice(8, 25)), (slice(0, 4), slice(0, 29), slice(30, 42))]
)
def test_a_region_of_an_oblique_model_grid_is_the_whole_resampling_on_its_box(bundled_package, box):
    grid = NetworkGrid.for_input(oblique_grid(), bundled_package)
    logits = torch.randn(2, *grid.geometry.shape, generator=torch.Generator().manual_seed(0))
    crop, input_box = grid.region(box)
    assert all(c.start <= b.start and c.stop >= b.stop for c, b in zip(crop, box, strict=True))
    values = grid.crop_to_input(logits[(slice(None), *crop)], crop, input_box)
    torch.testing.assert_close(values, grid.to_input(logits)[(slice(None), *input_box)], atol=5e-5, rtol=0)
