"""Volumes and their geometry.

Arrays are indexed ``(k, j, i)`` (slice, row, column), as ``sitk.GetArrayFromImage`` and
``slicer.util.arrayFromVolume`` return them. Physical coordinates follow DICOM/ITK: millimetres in
LPS (x grows to the patient's Left, y to Posterior, z to Superior). Slicer shows RAS; the two differ
by a sign on x and y: ``ijk_to_ras = diag(-1, -1, 1, 1) @ ijk_to_lps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in space.

    Attributes:
        shape: grid size in array order ``(k, j, i)``.
        spacing: voxel size in mm along ``(i, j, k)`` (ITK order).
        origin: LPS position in mm of the centre of voxel ``(i, j, k) = (0, 0, 0)``.
        direction: 3x3 matrix whose columns are the LPS unit vectors of the ``i``, ``j`` and ``k``
            axes (ITK's direction matrix, row-major).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major, hashable and immutable

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in np.asarray(self.direction).ravel()))
        if len(self.shape) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("a Geometry is three-dimensional: shape, spacing and origin of 3, direction of 9")
        if min(self.spacing) <= 0:
            raise ValueError(f"voxel spacing must be positive, got {self.spacing}")

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3x3 direction matrix (columns = LPS directions of i, j, k)."""
        return np.array(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 homogeneous matrix from ``(i, j, k, 1)`` voxel indices to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 homogeneous matrix from ``(i, j, k, 1)`` voxel indices to RAS mm (Slicer's frame)."""
        return LPS_TO_RAS @ self.ijk_to_lps

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size of the grid in mm along ``(i, j, k)``, voxel edge to voxel edge."""
        size_ijk = self.shape[::-1]
        return tuple(n * s for n, s in zip(size_ijk, self.spacing, strict=True))

    def ijk_to_physical(self, ijk: np.ndarray, frame: str = "LPS") -> np.ndarray:
        """Map voxel indices to physical points.

        Args:
            ijk: ``(N, 3)`` (or ``(3,)``) continuous indices in ``(i, j, k)`` order.
            frame: ``"LPS"`` or ``"RAS"``.

        Returns:
            ``(N, 3)`` (or ``(3,)``) points in mm.
        """
        matrix = self.ijk_to_lps if frame.upper() == "LPS" else self.ijk_to_ras
        points = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        out = points @ matrix[:3, :3].T + matrix[:3, 3]
        return out[0] if np.ndim(ijk) == 1 else out

    def physical_to_ijk(self, points: np.ndarray, frame: str = "LPS") -> np.ndarray:
        """Inverse of :meth:`ijk_to_physical`: ``(N, 3)`` mm points to continuous ``(i, j, k)``."""
        matrix = np.linalg.inv(self.ijk_to_lps if frame.upper() == "LPS" else self.ijk_to_ras)
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        out = pts @ matrix[:3, :3].T + matrix[:3, 3]
        return out[0] if np.ndim(points) == 1 else out

    def resampled(self, target_spacing: tuple[float, float, float]) -> Geometry:
        """The grid with the same direction and physical box whose voxels are close to ``target_spacing``.

        The box runs from the first voxel's outer edge to the last voxel's outer edge. The new size
        along each axis is ``round(extent / target)`` (at least 1) and the new spacing is exactly
        ``extent / size``, so the box is kept exactly: this is the grid that
        ``torch.nn.functional.interpolate(size=..., align_corners=False)`` resamples onto.

        Args:
            target_spacing: wanted voxel size in mm along ``(i, j, k)``.
        """
        extent = np.asarray(self.extent_mm)
        size_ijk = np.maximum(1, np.round(extent / np.asarray(target_spacing, dtype=np.float64))).astype(int)
        spacing = extent / size_ijk
        corner_shift = (spacing - np.asarray(self.spacing)) / 2.0  # mm along i, j, k
        origin = np.asarray(self.origin) + self.direction_matrix @ corner_shift
        return Geometry(
            shape=tuple(int(n) for n in size_ijk[::-1]),
            spacing=tuple(spacing),
            origin=tuple(origin),
            direction=self.direction,
        )

    def cropped(self, box: tuple[slice, slice, slice]) -> Geometry:
        """The grid of the sub-array ``array[box]`` (``box`` in ``(k, j, i)`` order, steps of 1)."""
        start_kji = [b.start or 0 for b in box]
        stop_kji = [n if b.stop is None else min(b.stop, n) for b, n in zip(box, self.shape, strict=True)]
        origin = self.ijk_to_physical(np.asarray(start_kji[::-1], dtype=np.float64))
        shape = tuple(int(b - a) for a, b in zip(start_kji, stop_kji, strict=True))
        return Geometry(shape, self.spacing, tuple(origin), self.direction)

    def resized(self, shape: tuple[int, int, int]) -> Geometry:
        """The grid of ``shape`` (k, j, i) on the same box and direction (:meth:`resampled` to that size)."""
        extent = np.asarray(self.extent_mm)
        return self.resampled(tuple(extent / np.asarray(shape[::-1], dtype=np.float64)))

    @classmethod
    def from_ijk_to_ras(cls, shape: tuple[int, int, int], ijk_to_ras: np.ndarray) -> Geometry:
        """The grid of ``shape`` (k, j, i) placed by a 4x4 ``(i, j, k, 1)`` -> RAS mm matrix (a Slicer volume node's).

        Raises:
            ValueError: the matrix is singular (a voxel axis of zero length).
        """
        ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64)  # the flip is its own inverse
        axes = ijk_to_lps[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"the IJK to RAS matrix has an axis of zero length: {np.asarray(ijk_to_ras).tolist()}")
        return cls(shape, tuple(spacing), tuple(ijk_to_lps[:3, 3]), tuple((axes / spacing).ravel()))

    def is_close(self, other: Geometry, atol: float = 1e-4) -> bool:
        """True when both grids have the same shape and (within ``atol`` mm / ``atol``) the same geometry."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol, rtol=0)
            and np.allclose(self.origin, other.origin, atol=atol, rtol=0)
            and np.allclose(self.direction, other.direction, atol=atol, rtol=0)
        )

    def to_dict(self) -> dict:
        """JSON-friendly form (shape in k,j,i; spacing in i,j,k mm; LPS origin; row-major direction)."""
        return {
            "shape_kji": list(self.shape),
            "spacing_mm": list(self.spacing),
            "origin_lps_mm": list(self.origin),
            "direction": list(self.direction),
        }


@dataclass
class Volume:
    """A scalar 3D image: a float32 ``(k, j, i)`` array on a :class:`Geometry`."""

    array: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume array is 3D (k, j, i), got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(f"array shape {self.array.shape} does not match geometry shape {self.geometry.shape}")


def axis_aligned_geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Geometry:
    """A grid whose axes are the LPS axes (identity direction)."""
    return Geometry(shape=shape, spacing=spacing, origin=origin, direction=tuple(np.eye(3).ravel()))
