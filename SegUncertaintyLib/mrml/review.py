"""Reviewing in the scene: accept a region, or correct it in the Segment Editor and keep the correction.

The :class:`ReviewSession` keeps the status of every region and every corrected label map on disk
(saved after each action); this module ties it to the nodes: the region table's status column,
an edit-area segment that the Segment Editor is masked to while a region is corrected, and the
label map read back from the segmentation node when the correction is saved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..review.regions import Region, edit_area
from ..review.session import SESSION_FILE, ReviewSession
from . import display
from .nodes import node_geometry, segmentation_labels, set_segment
from .results import ResultNodes, set_region_status

EDIT_AREA_COLOUR = (1.0, 1.0, 1.0)


def open_session(results: ResultNodes, folder: str | os.PathLike) -> ReviewSession:
    """The review session of these results: reopened if ``folder`` holds one (statuses shown in the table), else new."""
    folder = Path(folder)
    if (folder / SESSION_FILE).exists():
        session = ReviewSession.load(folder)
    else:
        session = ReviewSession.start(folder, results.segmentation_file(), results.regions)
    for row, region in enumerate(session.regions):
        set_region_status(results.region_table, row, session.status[region.label])
    return session


def region_by_label(session: ReviewSession, label: int) -> tuple[int, Region]:
    """The row (rank order) and region of a region label."""
    for row, region in enumerate(session.regions):
        if region.label == label:
            return row, region
    raise KeyError(f"no region {label}")


def go_to_region(results: ResultNodes, session: ReviewSession, label: int) -> Region:
    """Centre the slice views on a region."""
    _, region = region_by_label(session, label)
    display.jump_to(results.segmentation.GetScene(), region.centroid_ras)
    return region


def accept_region(results: ResultNodes, session: ReviewSession, label: int, reviewer: str | None = None) -> None:
    """Mark a region right as it is (saved at once)."""
    session.accept(label, reviewer)
    set_region_status(results.region_table, region_by_label(session, label)[0], "accepted")


def begin_correction(
    results: ResultNodes, session: ReviewSession, label: int, reference: Any, editor_node: Any, margin_mm: float = 3.0
) -> str:
    """Prepare the Segment Editor to correct a region: editing allowed only in the region's edit area.

    Adds an outline-only segment for the edit area (the region's box grown by ``margin_mm``), and
    sets the editor node (``vtkMRMLSegmentEditorNode``) to the segmentation, the first class segment,
    masking inside the edit area, overwriting no other segment.

    Returns:
        The edit-area segment's ID (pass it to :func:`save_correction` or :func:`end_correction`).
    """
    import slicer

    region = go_to_region(results, session, label)
    segmentation = results.segmentation
    area_id = segmentation.GetSegmentation().AddEmptySegment("", f"edit area of region {label}", EDIT_AREA_COLOUR)
    grid = node_geometry(reference)
    set_segment(segmentation, area_id, edit_area(region, grid, margin_mm), grid)
    display.show_outline_only(segmentation, area_id)
    editor_node.SetAndObserveSegmentationNode(segmentation)
    editor_node.SetAndObserveSourceVolumeNode(reference)
    editor_node.SetSelectedSegmentID(results.segment_ids[min(results.segment_ids)])
    editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor_node.SetMaskSegmentID(area_id)
    editor_node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
    return area_id


def end_correction(results: ResultNodes, area_id: str) -> None:
    """Remove the edit-area segment (after saving, or when the reviewer gives up the correction)."""
    if results.segmentation.GetSegmentation().GetSegment(area_id) is not None:
        results.segmentation.GetSegmentation().RemoveSegment(area_id)


def save_correction(
    results: ResultNodes, session: ReviewSession, label: int, reference: Any, area_id: str, reviewer: str | None = None
) -> Path:
    """Keep the segmentation as it now is as a new version for this region (saved at once), and end the correction.

    Returns:
        The new version's label map file.
    """
    labels = segmentation_labels(results.segmentation, results.segment_ids, reference)
    path = session.correct(label, labels, reviewer)
    set_region_status(results.region_table, region_by_label(session, label)[0], "corrected")
    end_correction(results, area_id)
    return path
