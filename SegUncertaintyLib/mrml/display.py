"""How the results look in the slice views: the risk heatmap, outlines, and jumps to a region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"  # Slicer's own Inferno table
RISK_TABLE_NAME = "SegUncertainty risk (Inferno)"
# matplotlib's Inferno at 0, 1/8, ..., 1: used where Slicer's colour files are absent (slicer-core)
INFERNO_ANCHORS = (
    (0.001, 0.0, 0.014),
    (0.129, 0.047, 0.291),
    (0.342, 0.062, 0.429),
    (0.541, 0.135, 0.415),
    (0.736, 0.216, 0.33),
    (0.894, 0.353, 0.194),
    (0.978, 0.558, 0.035),
    (0.975, 0.798, 0.206),
    (0.988, 0.998, 0.645),
)


def risk_colour_node(scene: Any) -> Any:
    """The colour table for risk maps: Slicer's Inferno, or an equivalent 256-colour table made once per scene."""
    node = scene.GetNodeByID(INFERNO_ID)
    if node is not None:
        return node
    for existing in nodes_of_class(scene, "vtkMRMLColorTableNode"):
        if existing.GetName() == RISK_TABLE_NAME:
            return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", RISK_TABLE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    positions = np.linspace(0.0, 1.0, len(INFERNO_ANCHORS))
    anchors = np.asarray(INFERNO_ANCHORS)
    for index, t in enumerate(np.linspace(0.0, 1.0, 256)):
        rgb = [float(np.interp(t, positions, anchors[:, c])) for c in range(3)]
        node.SetColor(index, f"{t:.3f}", *rgb, 1.0)
    node.SetHideFromEditors(False)
    return node


def show_heatmap(volume: Any, opacity: float = 0.6, threshold: float = 0.1, maximum: float = 0.5) -> None:
    """Show a risk map (a scalar volume node of probabilities of error) as the foreground layer of every slice view.

    Voxels below ``threshold`` are transparent, so the image shows through where the risk is low.
    The colour scale is fixed, the same in every case: from 0 (black) to ``maximum`` (pale
    yellow; 0.5 by default, a voxel as likely wrong as right) and above.
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
