"""Intensities to the network's scale, and edge-aligned resizing (axis orders: :mod:`.axis_order`).

:func:`resize` changes only the voxel size of a grid, keeping its direction and physical box (see
:meth:`Geometry.resampled`), so the way back is the inverse resize. It uses
``torch.nn.functional.interpolate`` with ``align_corners=False``, which matches that geometry exactly,
runs on the GPU when there is one, and works channel-wise on logits and maps. Which grid a network
runs on, and the resampling between rotated grids, is :mod:`.network_grid`'s.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model.card import Normalization


def normalize_intensities(array: np.ndarray, norm: Normalization) -> np.ndarray:
    """Map raw intensities to the network's input scale.

    Args:
        array: ``(k, j, i)`` raw intensities (HU for CT).
        norm: the model card's normalisation.

    Returns:
        ``(k, j, i)`` float32 normalised intensities.
    """
    out = array.astype(np.float32, copy=True)
    if norm.scheme == "quantile":
        # quantiles of every second voxel along each axis: the same to a fraction of a percent, 8x cheaper
        low, high = np.quantile(out[::2, ::2, ::2], norm.quantiles)
        np.clip(out, low, high, out=out)
        out -= low
        out /= max(float(high - low), 1e-6)
        out -= out.mean()
        out /= float(out.std()) or 1.0
        out *= float(norm.std)
        out += float(norm.mean)
        return out
    if norm.clip is not None:
        np.clip(out, norm.clip[0], norm.clip[1], out=out)
    if norm.scheme == "ct":
        mean, std = float(norm.mean), float(norm.std)
    else:  # zscore over the voxels above the minimum (excludes zero-filled background of MRI), or all
        body = out[out > out.min()] if norm.scheme == "zscore" else out
        body = body if body.size else out
        mean, std = float(body.mean()), float(body.std()) or 1.0
    out -= mean
    out /= std
    return out


def resize(tensor: torch.Tensor, shape: tuple[int, int, int], mode: str = "trilinear") -> torch.Tensor:
    """Resize a ``(C, D, H, W)`` (or ``(B, C, D, H, W)``) tensor to spatial ``shape``, edge-aligned.

    ``mode`` is ``"trilinear"`` for intensities, logits and maps, ``"nearest-exact"`` for labels.
    The result keeps the input's dtype for floating tensors.
    """
    if tuple(tensor.shape[-3:]) == tuple(shape):
        return tensor
    batched = tensor.dim() == 5
    x = tensor if batched else tensor.unsqueeze(0)
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(x, size=tuple(shape), mode=mode, **kwargs)
    return out if batched else out.squeeze(0)


def _linear_stencil(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices and the weight of the second, as ``interpolate`` uses them.

    ``align_corners=False``: source = ``(o + 0.5) * size_in / size_out - 0.5``, clamped at 0.
    """
    source = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    weight = (source - low).astype(np.float32)
    return low, np.where(weight > 0, np.minimum(low + 1, size_in - 1), low), weight


def determined_box(first: int, last: int, size_in: int, size_out: int) -> slice:
    """The output voxels of a :func:`resize` along one axis whose two sources lie in ``[first, last)``."""
    low, high, _ = _linear_stencil(size_in, size_out)
    inside = np.flatnonzero((low >= first) & (high < last))
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def resize_box(
    crop: torch.Tensor, start: tuple[int, int, int], shape_in: tuple[int, int, int], shape_out: tuple[int, int, int]
) -> tuple[tuple[slice, slice, slice], torch.Tensor]:
    """Resize only a box of a grid: what :func:`resize` gives, on the output voxels the box determines.

    A trilinear output voxel depends on two source voxels per axis; this returns every output voxel
    whose sources all lie in the box, computed from the box alone. Used to resample small regions
    (the fragility search's ROI) many times without touching the whole volume.

    Args:
        crop: ``(C, d, h, w)`` values of the box ``start + (d, h, w)`` of a grid of ``shape_in``.
        start: the box's first voxel on that grid, ``(k, j, i)``.
        shape_in: the whole source grid's shape.
        shape_out: the whole output grid's shape (as passed to :func:`resize`).

    Returns:
        The output box as slices of the ``shape_out`` grid, and its ``(C, ...)`` values (empty when the
        box determines no output voxel).
    """
    boxes, out = [], crop
    for axis, (first, size_in, size_out) in enumerate(zip(start, shape_in, shape_out, strict=True)):
        low, high, weight = _linear_stencil(size_in, size_out)
        piece = determined_box(first, first + crop.shape[axis + 1], size_in, size_out)
        lo, hi = piece.start, piece.stop
        boxes.append(piece)
        index = torch.as_tensor(low[lo:hi] - first, device=crop.device)
        index_high = torch.as_tensor(high[lo:hi] - first, device=crop.device)
        shape = [1] * 4
        shape[axis + 1] = hi - lo
        w = torch.as_tensor(weight[lo:hi], device=crop.device, dtype=crop.dtype).reshape(shape)
        a, b = out.index_select(axis + 1, index), out.index_select(axis + 1, index_high)
        out = a + (b - a) * w
    return tuple(boxes), out
