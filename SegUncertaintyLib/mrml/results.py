"""The files of ``seguncertainty predict`` -> nodes in the scene, and the table of regions to review."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import palette
from ..errors import InputError
from ..predict_folder import PredictFolder, PredictSummary
from ..prediction import ClassVolume
from ..review.regions import Region
from ..volume import Volume
from . import display
from .nodes import add_segmentation, add_volume, node_geometry, set_segment

FRAGILE_SEGMENT = "fragile voxels"
REGION_COLUMNS = (
    "Rank",
    "Status",
    "Expected wrong voxels",
    "Volume (mL)",
    "Mean risk",
    "Max risk",
    "Fragile (%)",
    "R",
    "A",
    "S",
)


@dataclass
class ResultNodes:
    """What :func:`load_results` put in the scene.

    Attributes:
        output_dir: the command's output folder.
        summary: its ``summary.json``, typed.
        segmentation: ``vtkMRMLSegmentationNode`` with one segment per foreground class (and the
            fragile voxels as an outline-only segment when the search ran).
        segment_ids: class label value -> segment ID.
        fragile_segment_id: the fragile voxels' segment, or None.
        heatmap: scalar volume node of the estimated probability of error, [0, 1].
        heatmap_source: which map it shows (``error_probability`` or ``1 - max probability``).
        probabilities: class name -> volume node of its (calibrated when available) probability.
        regions: the high-risk regions, worst first.
        region_table: ``vtkMRMLTableNode``, one row per region in rank order.
    """

    output_dir: Path
    summary: PredictSummary
    segmentation: Any
    segment_ids: dict[int, str]
    fragile_segment_id: str | None
    heatmap: Any
    heatmap_source: str
    probabilities: dict[str, Any]
    regions: list[Region]
    region_table: Any

    @property
    def volumes(self) -> list[ClassVolume]:
        """Per foreground class: name, volume (mL) and its interval, from ``summary.json``."""
        return self.summary.classes

    def segmentation_file(self) -> Path:
        return self.output_dir / self.summary.outputs.segmentation


def load_results(scene: Any, output_dir: str | os.PathLike, reference: Any) -> ResultNodes:
    """Put the outputs of ``seguncertainty predict`` for the volume node ``reference`` into the scene.

    Every output must lie on the reference's grid (they do when the command ran on that volume);
    anything else is refused rather than shown misplaced.

    Raises:
        InputError: missing or unreadable outputs, or outputs on another grid.
    """
    folder = PredictFolder.read(output_dir)
    summary, outputs = folder.summary, folder.summary.outputs
    grid = node_geometry(reference)

    @functools.cache  # the risk map may be made from the probabilities shown
    def read(name: str) -> Volume:
        volume = folder.read_volume(name)
        if not volume.geometry.is_close(grid):
            raise InputError(f"{name} is not on the grid of volume {reference.GetName()!r}; was it made from it?")
        return volume

    base = reference.GetName()
    labels = read(outputs.segmentation).array.astype(np.uint8)
    segmentation, segment_ids = add_segmentation(
        scene, labels, grid, dict(enumerate(summary.model.classes[1:], start=1)), reference, f"{base} segmentation"
    )
    fragile_id = None
    fragile = folder.fragile(read)
    if fragile is not None:
        fragile_id = segmentation.GetSegmentation().AddEmptySegment("", FRAGILE_SEGMENT, palette.FRAGILE_COLOUR)
        set_segment(segmentation, fragile_id, fragile, grid)
        display.show_outline_only(segmentation, fragile_id)

    arrays = {name: read(file_name).array for name, file_name in outputs.shown_probabilities.items()}
    probabilities = {name: add_volume(scene, array, grid, f"{base} P({name})") for name, array in arrays.items()}
    # the probability of error if the probabilities are calibrated, unless the head estimated it
    source, risk = folder.risk(read)
    heatmap = add_volume(scene, np.clip(risk, 0.0, 1.0), grid, f"{base} risk")
    display.show_heatmap(heatmap)
    display.set_layers(scene, background=reference)

    regions = folder.regions()
    table = region_table(scene, regions, f"{base} high-risk regions")
    return ResultNodes(
        folder.directory, summary, segmentation, segment_ids, fragile_id, heatmap, source, probabilities, regions, table
    )


def region_table(scene: Any, regions: Sequence[Region], name: str) -> Any:
    """A ``vtkMRMLTableNode`` with one row per region, in rank order (columns :data:`REGION_COLUMNS`), all pending."""
    import vtk

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    columns = []
    for column in REGION_COLUMNS:
        kind = {"Rank": vtk.vtkIntArray, "Status": vtk.vtkStringArray}.get(column, vtk.vtkDoubleArray)
        array = kind()
        array.SetName(column)
        array.SetNumberOfTuples(len(regions))
        columns.append(array)
    for row, region in enumerate(regions):
        values = (
            region.rank,
            "pending",
            round(region.expected_errors, 1),
            round(region.volume_ml, 3),
            round(region.mean_risk, 3),
            round(region.max_risk, 3),
            round(100 * region.fragile_fraction, 1),
            *(round(c, 1) for c in region.centroid_ras),
        )
        for array, value in zip(columns, values, strict=True):
            array.SetValue(row, value)
    for array in columns:
        table.AddColumn(array)
    # column names as the header, so that rows of the views' table model are rows of the table
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)  # edited through the review buttons only
    return table


def set_region_status(table: Any, row: int, status: str) -> None:
    """Show a region's review status (``pending``, ``accepted``, ``corrected``) in its row."""
    table.SetCellText(row, REGION_COLUMNS.index("Status"), status)
