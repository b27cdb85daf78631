"""The grid a network runs on, and the way from the input grid there and back.

A card's ``inference.frame`` says in which axes the network sees the patient:

- ``"LPS"`` (the default for sliding-window models): the patient's own axes, as the project's
  models were trained (axis-aligned volumes, arrays ordered ``(z, y, x)`` growing to Superior,
  Posterior and Left), at the card's spacing. The answer then does not depend on how the image is
  stored: an input stored with permuted or reversed axes is permuted and flipped there (exact), and
  an oblique one is resampled trilinearly onto an axis-aligned grid that covers its whole box; the
  network's outputs come back onto the input grid the same way.
- ``"voxel"``: the input's own voxel axes, resized to the card's spacing, as nnU-Net runs its models
  (cards made from nnU-Net folders say so).
- ``"RAS"``: the input's voxel axes permuted and flipped as nibabel's ``as_closest_canonical`` does
  (no resampling), in ITK's array order (Superior, Anterior, Right), resized to the card's spacing:
  as TotalSegmentator hands its images to nnU-Net (cards of its networks say so).

Whole-volume models (``inference.mode`` ``"whole"``) run on the whole box resized to the card's
``inference.shape``, in the voxel axes or, with ``inference.orientation`` ``"RAS"``, permuted and
flipped as nibabel's ``as_closest_canonical`` does (see :class:`~.axis_order.AxisOrder`).

Resampling is trilinear with edge clamping on both paths (``align_corners=False`` geometry); logits,
not probabilities, are resampled back, so every output shares one argmax on the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .axis_order import AxisOrder
from .errors import InputError, ModelError
from .model.package import ModelPackage
from .preprocess import determined_box, resize, resize_box
from .volume import Geometry

Box = tuple[slice, slice, slice]
FRAMES = ("LPS", "voxel", "RAS")  # the sliding-window frames (see the module text)

# Below this difference from the frame's axes (cosine), a grid counts as aligned with them: 1e-4 is
# at most 0.05 mm over a 500 mm field of view, and NRRD and DICOM round trips leave about 1e-16 to 1e-6.
ALIGNED_TOLERANCE = 1e-4
IDENTITY = AxisOrder()
SLAB_VOXELS = 2**22  # output voxels resampled per call on the oblique path (the sampling grid is 12 bytes each)


def frame_of(package: ModelPackage) -> str:
    """The card's network frame: ``"LPS"``, ``"voxel"``, or ``"whole"`` for whole-volume models."""
    inference = package.card.inference
    if inference.mode == "whole":
        return "whole"
    frame = inference.frame
    if frame not in FRAMES:
        raise ModelError(f"model {package.card.name!r}: unknown inference.frame {frame!r} (known: {', '.join(FRAMES)})")
    return frame


@dataclass(frozen=True)
class NetworkGrid:
    """An input grid, the model grid the network runs on, and the resampling between them.

    Attributes:
        source: the input grid.
        geometry: the model grid; logits, head maps and tapped features lie on it, in its own
            ``(k, j, i)`` order.
        storage: how the input's array axes become the model grid's (LPS frame: the permutation and
            flips to the patient's axes; identity otherwise).
        order: how the model grid's axes become the network's (RAS whole-volume models; identity otherwise).
        oblique: the model grid's axes are not the input's (up to permutation and flips), so both ways
            are trilinear resampling between rotated grids.
    """

    source: Geometry
    geometry: Geometry
    storage: AxisOrder = IDENTITY
    order: AxisOrder = IDENTITY
    oblique: bool = False

    @classmethod
    def for_input(cls, source: Geometry, package: ModelPackage) -> NetworkGrid:
        """The grid ``package``'s network runs on for an input on ``source`` (see the module text)."""
        inference, frame = package.card.inference, frame_of(package)
        if frame == "whole":
            order = AxisOrder.for_geometry(source, inference.orientation)
            shape = order.array_shape(inference.shape)
            return cls(source, source.resized(shape), order=order)
        spacing = package.card.target_spacing_mm
        if frame == "voxel":
            return cls(source, source.resampled(spacing))
        if frame == "RAS":
            storage = canonical_order(source)
            return cls(source, storage.geometry(source).resampled(spacing), storage=storage)
        try:
            storage = AxisOrder.for_geometry(source, "LPS")
        except InputError:  # 45 degrees between two axes: the resampling below does not need an order
            storage = AxisOrder()
        oriented = storage.geometry(source)
        if np.abs(oriented.direction_matrix - np.eye(3)).max() <= ALIGNED_TOLERANCE:
            return cls(source, oriented.resampled(spacing), storage=storage)
        return cls(source, covering_grid(source, spacing), oblique=True)

    # -- the whole volume ------------------------------------------------------------------------

    def to_grid(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(C, k, j, i)`` floating values on the input grid -> ``(C, ...)`` on the model grid (its ``(k, j, i)``).

        On an oblique grid, the model voxels outside the input's box (the covering grid's corners)
        take the value of the nearest edge of the input. A constant fill there would change the
        answer inside: instance-normalised windows take their statistics from all they see, and a
        face of air through the body is a structure the network never saw in training.
        """
        if not self.oblique:
            return resize(self.storage.to_network(tensor), self.geometry.shape)
        return _resample(tensor, self.source, self.geometry)

    def to_network(self, tensor: torch.Tensor) -> torch.Tensor:
        """:meth:`to_grid`, then in the network's axis order: ``(C, D, H, W)``."""
        return self.order.to_network(self.to_grid(tensor))

    def from_network(self, tensor: torch.Tensor) -> torch.Tensor:
        """Network-order ``(C, D, H, W)`` -> the model grid's ``(C, k, j, i)``."""
        return self.order.from_network(tensor)

    def to_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(C, k, j, i)`` values on the model grid -> ``(C, k, j, i)`` on the input grid (trilinear)."""
        if not self.oblique:
            return self.storage.from_network(resize(tensor, self.storage.network_shape(self.source.shape))).contiguous()
        return _resample(tensor, self.geometry, self.source)

    # -- a box of the model grid (the fragility search's regions) -------------------------------

    def region(self, box: Box) -> tuple[Box, Box]:
        """For a box of the model grid: the model-grid crop to resample, and the input box it gives.

        Every input voxel of the returned input box is computed from the crop alone
        (:meth:`crop_to_input`), and together they cover the model box (grown by a voxel).
        """
        crop = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, self.geometry.shape, strict=True)
        )
        if not self.oblique:
            oriented_shape = self.storage.network_shape(self.source.shape)
            inner = tuple(
                determined_box(c.start, c.stop, n_in, n_out)
                for c, n_in, n_out in zip(crop, self.geometry.shape, oriented_shape, strict=True)
            )
            return crop, self.storage.array_box(inner, self.source.shape)
        # Oblique: the input voxels inside the crop's box, and the model voxels their stencils reach.
        inside = _index_box(crop, self.geometry, self.source, outer=False)
        reads = _index_box(inside, self.source, self.geometry, outer=True)
        hull = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(reads, crop, strict=True))
        return hull, inside

    def crop_to_input(self, crop: torch.Tensor, crop_box: Box, input_box: Box) -> torch.Tensor:
        """``(C, ...)`` values of a model-grid crop -> ``(C, ...)`` values on ``input_box`` (from :meth:`region`)."""
        if not self.oblique:
            start = tuple(s.start for s in crop_box)
            oriented_shape = self.storage.network_shape(self.source.shape)
            _, values = resize_box(crop, start, self.geometry.shape, oriented_shape)
            return self.storage.from_network(values)
        return _resample(crop, self.geometry.cropped(crop_box), self.source.cropped(input_box))


def canonical_order(source: Geometry) -> AxisOrder:
    """The order that brings ``source``'s array to nibabel's ``as_closest_canonical`` axes, kept in
    ITK's ``(k, j, i)`` order: first axis Superior, then Anterior, then Right.

    The same axes as the patient's LPS order ``(S, P, L)``, with the last two reversed.
    """
    lps = AxisOrder.for_geometry(source, "LPS")
    return AxisOrder(lps.permutation, (lps.flips[0], not lps.flips[1], not lps.flips[2]))


def covering_grid(source: Geometry, spacing: tuple[float, float, float]) -> Geometry:
    """The axis-aligned (LPS) grid of about ``spacing`` mm that covers ``source``'s whole box.

    The box runs from the outer corners of ``source``'s voxels; each axis gets ``round(extent /
    spacing)`` voxels (at least 1) of exactly ``extent / size``.
    """
    shape_ijk = np.asarray(source.shape[::-1], dtype=np.float64)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
    points = source.ijk_to_physical(corners * shape_ijk - 0.5)
    low, high = points.min(axis=0), points.max(axis=0)
    size = np.maximum(1, np.round((high - low) / np.asarray(spacing, dtype=np.float64))).astype(int)
    step = (high - low) / size
    return Geometry(tuple(int(n) for n in size[::-1]), tuple(step), tuple(low + step / 2), tuple(np.eye(3).ravel()))


def _index_map(source: Geometry, target: Geometry) -> np.ndarray:
    """4x4 matrix from ``target``'s ``(i, j, k, 1)`` indices to ``source``'s continuous indices."""
    return np.linalg.inv(source.ijk_to_lps) @ target.ijk_to_lps


def _index_box(box: Box, grid: Geometry, other: Geometry, outer: bool) -> Box:
    """A ``(k, j, i)`` box of ``grid`` on ``other``'s voxels.

    ``outer=False``: the voxels of ``other`` whose centres lie in the box's extent (its voxels'
    outer edges). ``outer=True``: the voxels of ``other`` that trilinear sampling at the box's voxel
    centres reads.
    """
    matrix = _index_map(other, grid)
    ends = [(b.start, b.stop - 1) for b in box[::-1]]  # (i, j, k) first and last voxel
    half = 0.0 if outer else 0.5
    i, j, k = ([first - half, last + half] for first, last in ends)
    corners = np.array([[a, b, c, 1.0] for a in i for b in j for c in k])
    mapped = (corners @ matrix.T)[:, :3]
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    if outer:
        first, last = np.floor(low), np.floor(high) + 1
    else:
        first, last = np.ceil(low), np.floor(high)
    out = []
    for a, b, n in zip(first[::-1], last[::-1], other.shape, strict=True):
        start, stop = int(min(max(a, 0), n)), int(min(max(b + 1, 0), n))
        out.append(slice(start, max(stop, start)))
    return tuple(out)


def _resample(tensor: torch.Tensor, source: Geometry, target: Geometry) -> torch.Tensor:
    """Trilinear values of ``(C, k, j, i)`` ``tensor`` on ``source`` at the voxel centres of ``target``.

    Positions outside ``source``'s box read its nearest edge (clamped, as :func:`~.preprocess.resize`
    does). Works in slabs of ``target``'s k so that the sampling grid stays small.
    """
    if tensor.shape[1:] != source.shape:
        raise ValueError(f"values of shape {tuple(tensor.shape)} are not on a grid of {source.shape}")
    c, (kt, jt, it) = tensor.shape[0], target.shape
    out = torch.empty((c, kt, jt, it), dtype=tensor.dtype, device=tensor.device)
    if 0 in target.shape:
        return out
    # grid_sample wants positions normalised to [-1, 1] across the edges (align_corners=False) as (x, y, z) = (i, j, k)
    size_ijk = np.asarray(source.shape[::-1], dtype=np.float64)
    normalise = np.diag([*(2.0 / size_ijk), 1.0])
    normalise[:3, 3] = 1.0 / size_ijk - 1.0
    matrix = torch.as_tensor(normalise @ _index_map(source, target), dtype=torch.float64, device=tensor.device)
    i = torch.arange(it, dtype=torch.float64, device=tensor.device)
    j = torch.arange(jt, dtype=torch.float64, device=tensor.device)
    plane = matrix[:3, 0] * i[None, :, None] + matrix[:3, 1] * j[:, None, None] + matrix[:3, 3]  # (jt, it, 3)
    x = tensor[None].float() if tensor.dtype not in (torch.float32, torch.float64) else tensor[None]
    step = max(1, SLAB_VOXELS // (jt * it))
    for k0 in range(0, kt, step):
        k = torch.arange(k0, min(k0 + step, kt), dtype=torch.float64, device=tensor.device)
        grid = (plane[None] + matrix[:3, 2] * k[:, None, None, None]).to(x.dtype)
        values = F.grid_sample(x, grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
        out[:, k0 : k0 + len(k)] = values.to(out.dtype)
    return out
