"""Volume and segmentation nodes <-> ``(k, j, i)`` arrays on a :class:`Geometry`, exactly.

A node's grid is its IJK-to-RAS matrix; a :class:`Geometry` is ITK's LPS spacing, origin and
direction. :meth:`Geometry.from_ijk_to_ras` and :attr:`Geometry.ijk_to_ras` convert one into the
other, so a volume goes from Slicer to a file for the command and its outputs come back onto the
very same grid (oblique and anisotropic included).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import palette
from ..errors import InputError
from ..io import write_volume
from ..volume import Geometry, Volume


def node_geometry(node: Any) -> Geometry:
    """The grid of a volume node (``vtkMRMLScalarVolumeNode`` or a subclass).

    Raises:
        InputError: the node has no image, or lies under a transform (harden it first: the
            engine works on the voxel grid as stored).
    """
    import vtk

    image = node.GetImageData()
    if image is None:
        raise InputError(f"volume {node.GetName()!r} has no image data")
    if node.GetParentTransformNode() is not None:
        raise InputError(
            f"volume {node.GetName()!r} is under a transform; harden it (Data module, right-click, "
            "'Harden transform') before segmenting it"
        )
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return Geometry.from_ijk_to_ras(tuple(reversed(image.GetDimensions())), ijk_to_ras)


def node_volume(node: Any) -> Volume:
    """A copy of a scalar volume node's voxels as a float32 :class:`Volume` on its grid."""
    import slicer

    geometry = node_geometry(node)
    array = slicer.util.arrayFromVolume(node)
    if array.ndim != 3:
        raise InputError(f"volume {node.GetName()!r} has {array.shape[-1]} components per voxel, not one")
    return Volume(np.array(array, dtype=np.float32), geometry)


def write_node(node: Any, path: str | os.PathLike) -> Path:
    """Write a volume node to an image file (NRRD, NIfTI, MHA by suffix) with its exact geometry."""
    volume = node_volume(node)
    return write_volume(volume.array, volume.geometry, path)


def set_geometry(node: Any, geometry: Geometry) -> None:
    """Place a volume node on ``geometry`` (its IJK-to-RAS matrix)."""
    import slicer

    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras))


def add_volume(scene: Any, array: np.ndarray, geometry: Geometry, name: str, labelmap: bool = False) -> Any:
    """A new volume node holding a copy of ``array`` ``(k, j, i)`` on ``geometry``, with its display node.

    Args:
        scene: the MRML scene.
        array: voxels; float64 is stored as float32, bool as uint8, int64 as int32 (VTK's limits).
        labelmap: a ``vtkMRMLLabelMapVolumeNode`` instead of a scalar volume.
    """
    import slicer

    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise ValueError(f"array of shape {array.shape} is not on the grid {geometry.shape}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    set_geometry(node, geometry)
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    return node


def add_segmentation(
    scene: Any, labels: np.ndarray, geometry: Geometry, names: dict[int, str], reference: Any, name: str
) -> tuple[Any, dict[int, str]]:
    """A segmentation node with one segment per label value, on the grid of ``reference``.

    Args:
        labels: ``(k, j, i)`` label map on ``geometry`` (0 = background).
        names: label value -> segment name (every value listed gets a segment, empty or not).
        reference: the volume node the segmentation is drawn over (its reference geometry).
        name: the node's name.

    Returns:
        The node and label value -> segment ID.
    """
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    ids = {}
    for value, segment_name in names.items():
        colour = palette.class_colour(value)
        ids[value] = segmentation.GetSegmentation().AddEmptySegment("", segment_name, colour)
        set_segment(segmentation, ids[value], np.asarray(labels) == value, geometry)
    return segmentation, ids


def oriented_image(array: np.ndarray, geometry: Geometry) -> Any:
    """A ``vtkOrientedImageData`` holding a copy of ``array`` ``(k, j, i)`` placed on ``geometry``."""
    import slicer
    from vtk.util import numpy_support

    array = np.ascontiguousarray(array)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reversed(array.shape))
    # (k, j, i) C order is VTK's point order: i fastest
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras))
    return image


def set_segment(segmentation: Any, segment_id: str, mask: np.ndarray, geometry: Geometry) -> None:
    """Replace a segment's voxels by ``mask`` ``(k, j, i)`` on ``geometry``."""
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    image = oriented_image(np.asarray(mask).astype(np.uint8), geometry)
    if not logic.SetBinaryLabelmapToSegment(image, segmentation, segment_id, logic.MODE_REPLACE):
        raise InputError(f"cannot set the voxels of segment {segment_id!r} of {segmentation.GetName()!r}")


def segment_mask(segmentation: Any, segment_id: str, reference: Any) -> np.ndarray:
    """A segment's voxels as a ``(k, j, i)`` bool mask on the grid of the volume node ``reference``."""
    import slicer
    from vtk.util import numpy_support

    geometry = node_geometry(reference)
    value = segmentation.GetSegmentation().GetSegment(segment_id).GetLabelValue()  # segments share layers
    segment = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(segmentation, segment_id, segment)
    if segment.IsEmpty():
        return np.zeros(geometry.shape, bool)
    resampled = slicer.vtkOrientedImageData()
    grid = oriented_image(np.zeros(geometry.shape, np.uint8), geometry)
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(segment, grid, resampled):
        raise InputError(f"cannot resample segment {segment_id!r} of {segmentation.GetName()!r} onto the volume")
    scalars = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    return scalars.reshape(geometry.shape) == value


def segmentation_labels(segmentation: Any, segment_ids: dict[int, str], reference: Any) -> np.ndarray:
    """The label map of the segments ``segment_ids`` (label value -> segment ID) on ``reference``'s grid.

    Where segments overlap, the larger label value wins (as the command's label map has no overlaps,
    this only matters after a correction that painted over another class).
    """
    shape = node_geometry(reference).shape
    labels = np.zeros(shape, np.uint8)
    for value, segment_id in sorted(segment_ids.items()):
        labels[segment_mask(segmentation, segment_id, reference)] = value
    return labels
