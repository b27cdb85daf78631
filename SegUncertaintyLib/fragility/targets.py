"""Grow and shrink targets around the reference segmentation, their band, and the ROI to search.

Each adversary gets a whole target label map: the reference labels, except in a shell of
``radius`` mm just outside a class (grow: set to that class) or just inside it (shrink: set to the
class the network ranks second there). The band is where a target differs from the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .layout import Box, grow


def ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """``(k, j, i)`` bool ball of ``radius_mm`` on a grid of ``spacing`` (mm along ``i, j, k``)."""
    reach = [max(int(radius_mm // s), 0) for s in spacing[::-1]]
    axes = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    distance2 = sum((a * s) ** 2 for a, s in zip(axes, spacing[::-1], strict=True))
    structure = distance2 <= radius_mm**2 + 1e-9
    if structure.sum() == 1:  # radius below the voxel size: the 6-neighbourhood, one voxel of change
        structure = ndimage.generate_binary_structure(3, 1)
    return structure


@dataclass
class Target:
    """One adversary's goal, on a box of the model grid.

    Attributes:
        labels: ``(d, h, w)`` uint8 target label map over the box (the reference outside ``band``).
        band: ``(d, h, w)`` bool voxels where the target differs from the reference.
    """

    labels: np.ndarray
    band: np.ndarray


def make_targets(
    logits: np.ndarray, classes: list[str], radii_mm: tuple[float, ...], spacing: tuple[float, float, float]
) -> dict[str, Target]:
    """Grow and shrink targets for every foreground class present in a box and every radius.

    The box must hold the whole contour it pushes (:func:`band_regions` makes such boxes); the
    grid's edge is not a contour (erosion treats the outside as foreground).

    Args:
        logits: ``(C, d, h, w)`` reference logits over a box of the model grid.
        classes: class names, background first.
        radii_mm: shell widths in mm.
        spacing: model-grid voxel size in mm along ``(i, j, k)``.

    Returns:
        Name -> target, for the classes present in the box.
    """
    reference = logits.argmax(axis=0).astype(np.uint8)
    targets = {}
    for c in range(1, len(classes)):
        inside = reference == c
        if not inside.any():
            continue
        others = logits.copy()
        others[c] = -np.inf
        runner_up = others.argmax(axis=0).astype(np.uint8)
        for radius in radii_mm:
            structure = ball(radius, spacing)
            grown = ndimage.binary_dilation(inside, structure) & ~inside
            shrunk = inside & ~ndimage.binary_erosion(inside, structure, border_value=1)
            grow = reference.copy()
            grow[grown] = c
            shrink = reference.copy()
            shrink[shrunk] = runner_up[shrunk]
            targets[adversary_name("grow", classes[c], radius)] = Target(grow, grown)
            targets[adversary_name("shrink", classes[c], radius)] = Target(shrink, shrunk)
    return targets


def adversary_name(direction: str, class_name: str, distance: float, unit: str = "mm") -> str:
    """``"grow nodule 2 mm"``: how adversaries are named in summaries."""
    return f"{direction} {class_name} {distance:g} {unit}"


def band_regions(
    labels: np.ndarray, num_classes: int, radius_mm: float, spacing: tuple[float, float, float], margin: int
) -> list[Box]:
    """Disjoint boxes of the model grid, one per cluster of contour, holding every band voxel plus ``margin``.

    The band of the widest shell holds those of the narrower ones; band voxels closer than about
    twice the margin share a box, and boxes that would touch are merged.

    Args:
        labels: ``(D, H, W)`` reference labels on the model grid.
        num_classes: C, background included.
        radius_mm: the widest shell.
        spacing: voxel size in mm along ``(i, j, k)``.
        margin: voxels added around each cluster.
    """
    structure = ball(radius_mm, spacing)
    reach = max(structure.shape) // 2 + 1
    band = np.zeros(labels.shape, bool)
    for c in range(1, num_classes):
        inside = labels == c
        if not inside.any():
            continue
        box = bounding_box(inside, reach)
        part = inside[box]
        band[box] |= ndimage.binary_dilation(part, structure) & ~ndimage.binary_erosion(part, structure, border_value=1)
    if not band.any():
        return []
    clusters, _ = ndimage.label(ndimage.binary_dilation(band, iterations=margin + 1))
    boxes = [grow(s, margin, labels.shape) for s in ndimage.find_objects(np.where(band, clusters, 0)) if s]
    merged = True
    while merged:  # boxes closer than 2 voxels become one (their resampled neighbourhoods must not overlap)
        merged = False
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                pairs = zip(boxes[a], boxes[b], strict=True)
                if all(x.start <= y.stop + 2 and y.start <= x.stop + 2 for x, y in pairs):
                    boxes[a] = tuple(
                        slice(min(x.start, y.start), max(x.stop, y.stop))
                        for x, y in zip(boxes[a], boxes[b], strict=True)
                    )
                    del boxes[b]
                    merged = True
                    break
            if merged:
                break
    return boxes


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The smallest box holding every true voxel of ``mask``, padded by ``margin`` and kept inside the grid."""
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + 1 + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
