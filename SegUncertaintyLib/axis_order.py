"""How an array's axes map onto another orientation's: permutations and flips, never resampling.

Plain numpy (no torch import): the report uses it to show views by anatomy; the networks use it
on tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .errors import InputError, ModelError
from .volume import LPS_TO_RAS, Geometry

Array = TypeVar("Array", bound=Any)  # a torch.Tensor or a numpy.ndarray


@dataclass(frozen=True)
class AxisOrder:
    """How a network's ``(D, H, W)`` axes map onto a volume's ``(k, j, i)`` array axes.

    Networks trained on arrays in a canonical orientation (nibabel's closest-canonical RAS: first
    axis Right, then Anterior, then Superior) need their input permuted and flipped to it.
    ``permutation[n]`` is the array axis that becomes network axis ``n``; ``flips[n]`` says whether
    it is then reversed.
    """

    permutation: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    @classmethod
    def for_geometry(cls, geometry: Geometry, orientation: str | None) -> AxisOrder:
        """The order that brings ``geometry``'s array closest to ``orientation``'s axes.

        None: identity. ``"RAS"``: nibabel's ``as_closest_canonical`` (first axis Right, then
        Anterior, then Superior). ``"LPS"``: the patient's axes in ITK's array order ``(z, y, x)``
        (first axis Superior, then Posterior, then Left), the order of an identity direction.

        Raises:
            InputError: two axes are 45 degrees from the same patient axis.
        """
        if orientation is None:
            return cls()
        if orientation not in ("RAS", "LPS"):
            raise ModelError(f"unknown network orientation {orientation!r} (known: RAS, LPS)")
        if orientation == "RAS":
            wanted = LPS_TO_RAS[:3, :3] @ geometry.direction_matrix  # row r: RAS axis r; column c: voxel axis
        else:  # network axes (D, H, W) = (z, y, x)
            wanted = geometry.direction_matrix[::-1]
        permutation, flips = [], []
        for axis in range(3):
            column = int(np.argmax(np.abs(wanted[axis])))  # the voxel axis closest to this axis
            permutation.append(2 - column)  # voxel axis (i, j, k)[c] is array axis 2 - c
            flips.append(bool(wanted[axis, column] < 0))
        if sorted(permutation) != [0, 1, 2]:
            raise InputError("the volume's axes are too oblique to tell which is which (45 degrees)")
        return cls(tuple(permutation), tuple(flips))

    def geometry(self, geometry: Geometry) -> Geometry:
        """The grid of :meth:`to_network`'s result, as a ``(k, j, i)`` grid: the same voxels in the new axis order."""
        columns = geometry.direction_matrix
        shape = self.network_shape(geometry.shape)
        direction, spacing = np.zeros((3, 3)), [0.0, 0.0, 0.0]
        first = [0.0, 0.0, 0.0]  # (i, j, k) index, on the old grid, of the new grid's first voxel
        for n, (a, flipped) in enumerate(zip(self.permutation, self.flips, strict=True)):
            old, new = 2 - a, 2 - n  # voxel axes (i, j, k) of array axes a and n
            direction[:, new] = columns[:, old] * (-1.0 if flipped else 1.0)
            spacing[new] = geometry.spacing[old]
            first[old] = geometry.shape[a] - 1.0 if flipped else 0.0
        origin = geometry.ijk_to_physical(np.asarray(first))
        return Geometry(shape, tuple(spacing), tuple(origin), tuple(direction.ravel()))

    def array_box(self, box: tuple[slice, slice, slice], shape: tuple[int, int, int]) -> tuple[slice, slice, slice]:
        """A box of :meth:`to_network`'s result (network order) as a box of the ``(k, j, i)`` array of ``shape``."""
        out: list[slice] = [slice(0, 0)] * 3
        for n, (a, flipped) in enumerate(zip(self.permutation, self.flips, strict=True)):
            piece = box[n]
            out[a] = slice(shape[a] - piece.stop, shape[a] - piece.start) if flipped else piece
        return tuple(out)

    def network_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """A ``(k, j, i)`` shape in network axis order."""
        return tuple(shape[a] for a in self.permutation)

    def array_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """A network-order shape back in ``(k, j, i)`` order."""
        out = [0, 0, 0]
        for n, a in enumerate(self.permutation):
            out[a] = shape[n]
        return tuple(out)

    def to_network(self, tensor: Array) -> Array:
        """``(..., k, j, i)`` -> ``(..., D, H, W)`` of the network (a torch tensor or a numpy array: a view)."""
        lead = tensor.ndim - 3
        out = _permute(tensor, (*range(lead), *(lead + a for a in self.permutation)))
        return _flip(out, [lead + n for n, f in enumerate(self.flips) if f])

    def from_network(self, tensor: Array) -> Array:
        """The inverse of :meth:`to_network`."""
        lead = tensor.ndim - 3
        out = _flip(tensor, [lead + n for n, f in enumerate(self.flips) if f])
        inverse = [self.permutation.index(a) for a in range(3)]
        return _permute(out, (*range(lead), *(lead + n for n in inverse)))


def _permute(tensor: Array, axes: tuple[int, ...]) -> Array:
    return tensor.transpose(axes) if isinstance(tensor, np.ndarray) else tensor.permute(*axes)


def _flip(tensor: Array, axes: list[int]) -> Array:
    if not axes:
        return tensor
    return np.flip(tensor, axes) if isinstance(tensor, np.ndarray) else tensor.flip(axes)
