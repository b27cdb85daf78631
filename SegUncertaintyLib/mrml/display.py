"""How the results look in the slice views: the risk heatmap, outlines, and jumps to a region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import palette

RISK_TABLE_NAME = "SegUncertainty risk"


def risk_colour_node(scene: Any) -> Any:
    """The colour table of risk maps (:mod:`..palette`: 256 colours from 0 to ``RISK_MAX``), made once per scene."""
    for existing in nodes_of_class(scene, "vtkMRMLColorTableNode"):
        if existing.GetName() == RISK_TABLE_NAME:
            return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", RISK_TABLE_NAME)
    node.SetTypeToUser()
    table = palette.risk_table(256)
    node.SetNumberOfColors(len(table))
    for index, (risk, rgb) in enumerate(zip(np.linspace(0.0, palette.RISK_MAX, len(table)), table, strict=True)):
        node.SetColor(index, f"{risk:.3f}", *(float(c) for c in rgb), 1.0)
    node.SetHideFromEditors(False)
    return node


def show_heatmap(
    volume: Any,
    opacity: float = palette.RISK_OPACITY,
    threshold: float = palette.RISK_FLOOR,
    maximum: float = palette.RISK_MAX,
) -> None:
    """Show a risk map (a scalar volume node of probabilities of error) as the foreground layer of every slice view.

    Voxels below ``threshold`` are transparent, so the image shows through where the risk is low.
    The colour scale is fixed, the same in every case and in the report (:mod:`..palette`): from
    yellow to red at ``maximum`` (0.5 by default, a voxel as likely wrong as right) and above.
    """
    display = volume.GetDisplayNode()
    if display is None:
        volume.CreateDefaultDisplayNodes()
        display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(risk_colour_node(volume.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, maximum)
    set_heatmap_threshold(volume, threshold)
    set_layers(volume.GetScene(), foreground=volume, foreground_opacity=opacity)


def set_heatmap_threshold(volume: Any, threshold: float) -> None:
    """Hide the heatmap's voxels below ``threshold`` (0: show all)."""
    display = volume.GetDisplayNode()
    display.AutoThresholdOff()
    display.SetApplyThreshold(1 if threshold > 0 else 0)
    display.SetThreshold(threshold, 1e9)


def set_layers(
    scene: Any, background: Any = None, foreground: Any = None, foreground_opacity: float | None = None
) -> None:
    """Set the background and/or foreground volume (nodes; None: leave as is) of every slice view."""
    for composite in nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if foreground_opacity is not None:
            composite.SetForegroundOpacity(foreground_opacity)


def show_outline_only(segmentation: Any, segment_id: str, thickness: int = 2) -> None:
    """Draw one segment as an outline (no fill) in the slice views."""
    display = segmentation.GetDisplayNode()
    display.SetSegmentOpacity2DFill(segment_id, 0.0)
    display.SetSegmentOpacity2DOutline(segment_id, 1.0)
    display.SetSliceIntersectionThickness(thickness)


def jump_to(scene: Any, ras: Sequence[float]) -> None:
    """Centre every slice view on a RAS point (mm)."""
    import slicer

    r, a, s = (float(c) for c in ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    """The nodes of a class in the scene, as a list."""
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]
