"""High-risk regions: where a reviewer should look first, ranked by how many wrong voxels they likely hold.

A region is a connected component (26-neighbourhood) of the voxels whose estimated probability of
error is at least a threshold, united with the fragile voxels of the adversarial search; components
closer than a merge distance form one region, so that a ragged rim of risky voxels along one
boundary is reviewed once. Its expected number of wrong voxels is the sum of that probability over
its voxels; regions are ranked by it, largest first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..fragility.targets import ball
from ..volume import Geometry

DEFAULT_THRESHOLD = 0.1
DEFAULT_MERGE_MM = 3.0


@dataclass(frozen=True)
class Region:
    """One high-risk region.

    Attributes:
        rank: 1 for the region with the most expected wrong voxels.
        label: its value in the region label map.
        voxels: its size in voxels.
        volume_ml: its size in mL.
        centroid_ras: its centre of mass, RAS mm (where Slicer's slice views jump to).
        box_kji: ``((k0, k1), (j0, j1), (i0, i1))`` its bounding box, half-open voxel index ranges.
        mean_risk: mean estimated probability of error over its voxels.
        max_risk: the largest.
        fragile_fraction: share of its voxels that are fragile (0 without fragility maps).
        expected_errors: sum of the probability of error over its voxels (expected wrong voxels).
        expected_error_ml: the same in mL.
    """

    rank: int
    label: int
    voxels: int
    volume_ml: float
    centroid_ras: tuple[float, float, float]
    box_kji: tuple[tuple[int, int], ...]
    mean_risk: float
    max_risk: float
    fragile_fraction: float
    expected_errors: float
    expected_error_ml: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Region:
        """The region :meth:`to_dict` wrote (lists back to tuples)."""
        return cls(
            **{
                **data,
                "centroid_ras": tuple(data["centroid_ras"]),
                "box_kji": tuple(tuple(pair) for pair in data["box_kji"]),
            }
        )


def find_regions(
    error_probability: np.ndarray,
    geometry: Geometry,
    threshold: float = DEFAULT_THRESHOLD,
    fragile: np.ndarray | None = None,
    min_voxels: int = 1,
    merge_mm: float = 0.0,
) -> tuple[np.ndarray, list[Region]]:
    """The high-risk regions of one prediction.

    Args:
        error_probability: ``(k, j, i)`` estimated probability that each voxel is wrong, in [0, 1]
            (the head's ``error_probability`` map, or any map on that scale).
        geometry: the grid of the maps (for mL and RAS positions).
        threshold: voxels at or above it are high-risk.
        fragile: optional ``(k, j, i)`` mask of fragile voxels, high-risk whatever their probability.
        min_voxels: smaller regions are dropped (isolated voxels are rarely worth a look).
        merge_mm: high-risk voxels less than this far apart (mm) belong to the same region
            (0: plain connected components).

    Returns:
        ``(k, j, i)`` int32 label map (0: no region; ``n``: the region whose ``label`` is n, labels
        in rank order) and the regions, worst first.
    """
    risk = np.asarray(error_probability, np.float32)
    if risk.shape != tuple(geometry.shape):
        raise ValueError(f"risk map of shape {risk.shape} is not on the grid {tuple(geometry.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    fragile_mask = np.zeros(risk.shape, bool) if fragile is None else np.asarray(fragile, bool)
    components, count = _components((risk >= threshold) | fragile_mask, geometry.spacing, merge_mm)
    if count == 0:
        return np.zeros(risk.shape, np.int32), []
    # every statistic from the high-risk voxels alone, in array order (as ndimage's sums run, so the
    # figures are the same to the bit): ndimage's maximum sorts the whole volume, 78 M voxels for a CT
    where = np.flatnonzero(components)
    labels = components.ravel()[where]
    values = risk.ravel()[where]
    voxels = np.bincount(labels, minlength=count + 1)[1:].astype(np.float64)
    expected = np.bincount(labels, weights=values, minlength=count + 1)[1:]
    maxima = np.full(count + 1, -np.inf, np.float32)
    np.maximum.at(maxima, labels, values)
    maxima = maxima[1:]
    fragile_counts = np.bincount(labels, weights=fragile_mask.ravel()[where], minlength=count + 1)[1:]
    coordinates = np.unravel_index(where, risk.shape)
    centres = np.stack(
        [np.bincount(labels, weights=c.astype(np.float64), minlength=count + 1)[1:] / voxels for c in coordinates],
        axis=1,
    )
    boxes = ndimage.find_objects(components)
    keep = [n for n in np.argsort(-expected, kind="stable") if voxels[n] >= min_voxels]
    relabel = np.zeros(count + 1, np.int32)
    regions = []
    voxel_ml = geometry.voxel_volume_ml
    for rank, n in enumerate(keep, start=1):
        relabel[n + 1] = rank
        centroid = geometry.ijk_to_physical(np.asarray(centres[n])[::-1], frame="RAS")
        regions.append(
            Region(
                rank=rank,
                label=rank,
                voxels=int(voxels[n]),
                volume_ml=float(voxels[n] * voxel_ml),
                centroid_ras=tuple(float(c) for c in centroid),
                box_kji=tuple((int(s.start), int(s.stop)) for s in boxes[n]),
                mean_risk=float(expected[n] / voxels[n]),
                max_risk=float(maxima[n]),
                fragile_fraction=float(fragile_counts[n] / voxels[n]),
                expected_errors=float(expected[n]),
                expected_error_ml=float(expected[n] * voxel_ml),
            )
        )
    return relabel[components], regions


def edit_area(region: Region, geometry: Geometry, margin_mm: float = 3.0) -> np.ndarray:
    """Where a reviewer may edit to correct a region: its box grown by ``margin_mm`` on every side.

    Returns:
        ``(k, j, i)`` bool mask on ``geometry``.
    """
    area = np.zeros(geometry.shape, bool)
    margins = [int(np.ceil(margin_mm / s)) for s in geometry.spacing[::-1]]
    area[
        tuple(
            slice(max(lo - m, 0), min(hi + m, n))
            for (lo, hi), m, n in zip(region.box_kji, margins, geometry.shape, strict=True)
        )
    ] = True
    return area


def _components(mask: np.ndarray, spacing: tuple[float, float, float], merge_mm: float) -> tuple[np.ndarray, int]:
    """26-connected components of ``mask``, those closer than ``merge_mm`` joined (labels only on ``mask``)."""
    neighbourhood = np.ones((3, 3, 3), bool)
    if merge_mm <= 0 or not mask.any():
        return ndimage.label(mask, structure=neighbourhood)
    # two voxels within merge_mm touch once each grows by half of it
    grown = ndimage.binary_dilation(mask, structure=ball(merge_mm / 2, spacing))
    components, count = ndimage.label(grown, structure=neighbourhood)
    components[~mask] = 0
    return components, count


def remaining_risk(regions: list[Region], reviewed: set[int]) -> float:
    """Share of the expected wrong voxels that lie in regions not yet reviewed (by label), in [0, 1]."""
    total = sum(r.expected_errors for r in regions)
    if total == 0:
        return 0.0
    return sum(r.expected_errors for r in regions if r.label not in reviewed) / total
