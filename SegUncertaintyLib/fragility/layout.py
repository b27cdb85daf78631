"""Where the search runs: tiles over a ROI box, each tile's trunk window, and the crop the tail needs.

Coordinates are voxels of the model grid. An image smaller than a window is padded as the sliding
window pads it (half the shortfall before, the rest after, with the image minimum), so the trunk
sees what it sees at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[slice, ...]


@dataclass(frozen=True)
class Tile:
    """One tile of a ROI box.

    Attributes:
        tile: the tile's voxels on the model grid.
        window: the window (patch size) the trunk runs on, on the padded model grid.
        crop: the part of the window the tail runs on (the tile plus the tail's reach).
        valid: where the tile lies in the crop.
    """

    tile: Box
    window: Box
    crop: Box
    valid: Box


def padding_before(shape: Sequence[int], patch: Sequence[int]) -> list[int]:
    """Voxels padded before each axis of an image smaller than a window (half the shortfall)."""
    return [max(p - s, 0) // 2 for s, p in zip(shape, patch, strict=True)]


def reach_crop(lo: int, hi: int, size: int, reach: int, scale: int) -> tuple[slice, slice]:
    """Along one axis of a window of ``size``: the crop the tail needs to compute ``[lo, hi)`` exactly, and where
    ``[lo, hi)`` lies in it. The crop adds ``reach`` voxels each side (fewer at the window's edge, where the
    network pads too) and starts and ends on multiples of ``scale`` (the coarsest tail input's factor)."""
    start = max(lo - reach, 0) // scale * scale
    stop = min(-(-(hi + reach) // scale) * scale, size)
    return slice(start, stop), slice(lo - start, hi - start)


def tiles_for(
    roi: Box, needed: np.ndarray, shape: Sequence[int], patch: Sequence[int], reach: int, scale: Sequence[int]
) -> list[Tile]:
    """Equal tiles covering a ROI box, at most 3/4 of a window each (the rest is the trunk's context).

    Args:
        roi: the box, on the model grid of ``shape``.
        needed: ``roi``-shaped bool; tiles without a true voxel are left out.
        shape: the model grid's shape.
        patch: the window size.
        reach: voxels of the tail's input each output voxel depends on, each side.
        scale: per axis, the coarsest tail input's down-sampling factor.
    """
    before = padding_before(shape, patch)
    padded = [max(s, p) for s, p in zip(shape, patch, strict=True)]
    counts = [-(-(r.stop - r.start) // max(3 * p // 4, 1)) for r, p in zip(roi, patch, strict=True)]
    sizes = [-(-(r.stop - r.start) // n) for r, n in zip(roi, counts, strict=True)]
    starts = [range(r.start, r.stop, t) for r, t in zip(roi, sizes, strict=True)]
    tiles = []
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, 3):
        tile = tuple(slice(int(c), int(min(c + t, r.stop))) for c, t, r in zip(corner, sizes, roi, strict=True))
        if not needed[shift(tile, roi)].any():
            continue
        window, crop, valid = [], [], []
        for t, b, n, p, f in zip(tile, before, padded, patch, scale, strict=True):
            lo, hi = t.start + b, t.stop + b  # padded coordinates
            start = min(max((lo + hi) // 2 - p // 2, hi - p, 0), lo, n - p)
            crop_axis, valid_axis = reach_crop(lo - start, hi - start, p, reach, f)
            window.append(slice(start, start + p))
            crop.append(crop_axis)
            valid.append(valid_axis)
        tiles.append(Tile(tile, tuple(window), tuple(crop), tuple(valid)))
    return tiles


def shift(box: Box, origin: Box) -> Box:
    """``box`` in the coordinates of the box ``origin`` (which holds it)."""
    return tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, origin, strict=True))


def grow(box: Box, voxels: int, shape: Sequence[int]) -> Box:
    """``box`` padded by ``voxels`` each side, kept inside a grid of ``shape``."""
    return tuple(slice(max(s.start - voxels, 0), min(s.stop + voxels, n)) for s, n in zip(box, shape, strict=True))
