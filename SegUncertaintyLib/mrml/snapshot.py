"""Render a slice view to an RGB array through MRML's own slice pipeline (no window, no GPU).

``vtkMRMLSliceLogic`` reslices and blends the background, foreground and label layers exactly as
Slicer's slice views do. Segmentations are drawn in Slicer by a displayable manager, which needs a
render window; here the segments to show are put in the label layer, drawn as outlines. Used for
the README's and the extension's screenshots and by the tests, on the ``slicer-core`` wheel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..volume import Geometry
from .display import jump_to, nodes_of_class
from .nodes import add_volume


def add_outline_layer(
    scene: Any, masks: Sequence[np.ndarray], colours: Sequence[Sequence[float]], geometry: Geometry, name: str
) -> Any:
    """Show ``masks`` (``(k, j, i)`` bool, later ones on top) as coloured outlines in the label layer of every view.

    Returns:
        The labelmap volume node holding them (value n = mask n).
    """
    labels = np.zeros(geometry.shape, np.uint8)
    for value, mask in enumerate(masks, start=1):
        labels[np.asarray(mask, bool)] = value
    node = add_volume(scene, labels, geometry, name, labelmap=True)
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name} colours")
    table.SetTypeToUser()
    table.SetNumberOfColors(len(masks) + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value, colour in enumerate(colours, start=1):
        table.SetColor(value, f"outline {value}", *colour, 1.0)
    node.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
    for composite in nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetLabelVolumeID(node.GetID())
        composite.SetLabelOpacity(1.0)
    for slice_node in nodes_of_class(scene, "vtkMRMLSliceNode"):
        slice_node.SetUseLabelOutline(True)
    return node


def render_slice(
    scene: Any,
    view: str = "Red",
    centre_ras: Sequence[float] | None = None,
    field_of_view_mm: float = 60.0,
    size: int = 512,
) -> np.ndarray:
    """The blended layers of one slice view as an image.

    Args:
        scene: the scene (its composite nodes say which volumes each layer shows).
        view: ``Red`` (axial), ``Yellow`` (sagittal) or ``Green`` (coronal).
        centre_ras: the point the views are centred on (mm); None: as they are.
        field_of_view_mm: width and height of the shown square, mm.
        size: image width and height in pixels.

    Returns:
        ``(size, size, 3)`` uint8 RGB, row 0 at the top of the view.
    """
    import slicer
    from vtk.util import numpy_support

    slice_node = scene.GetNodeByID(f"vtkMRMLSliceNode{view}")
    if slice_node is None:
        raise ValueError(f"the scene has no {view} slice view")
    if centre_ras is not None:
        jump_to(scene, centre_ras)
    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(scene)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(application)
    logic.SetMRMLScene(scene)
    logic.SetSliceNode(slice_node)
    slice_node.SetDimensions(size, size, 1)
    slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm, slice_node.GetFieldOfView()[2])
    connection = logic.GetImageDataConnection()
    if connection is None:
        raise ValueError(f"the {view} slice view shows no volume")
    producer = connection.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return np.ascontiguousarray(pixels[::-1, :, :3])  # VTK's first row is the bottom
