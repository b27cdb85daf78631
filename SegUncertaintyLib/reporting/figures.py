"""Pictures for the reports, drawn with matplotlib (Agg) into PNG bytes.

Views are by anatomy, not by how the file is stored: the arrays are permuted and flipped to the
patient's axes (exact, no resampling; an oblique scan is shown on its nearest axes and says so),
then drawn in radiological convention as Slicer's slice views draw them: axial seen from the feet
(patient's right on the left, anterior up), coronal seen from the front (right on the left,
superior up), sagittal with anterior on the left and superior up. Each view has orientation
letters, its position in RAS mm (the frame of Slicer and of the regions' centres), a scale bar and
the voxels' physical aspect. The image is windowed by modality (:func:`display_window`); over it
the estimated probability of error is blended exactly as the Slicer module shows it
(:mod:`..palette`), with the segmentation's outline in its class colour and the fragile voxels'
outline in magenta.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .. import palette
from ..axis_order import AxisOrder
from ..errors import SegUncertaintyError
from ..volume import Geometry

PLANES = ("axial", "coronal", "sagittal")
# per plane: the array axis (after reordering to S, P, L) it cuts, the letters at its left, right,
# top and bottom edges, and the RAS coordinate that is constant on it
PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
EDGE_LETTERS = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}
POSITION = {"axial": ("S", 2), "coronal": ("A", 1), "sagittal": ("R", 0)}
SOFT_TISSUE_WINDOW = (40.0, 400.0)  # centre, width in HU: a CT model whose card names no window


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegUncertaintyError("reports are drawn with matplotlib: pip install matplotlib") from None
    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight", facecolor=figure.get_facecolor())
    _pyplot().close(figure)
    return buffer.getvalue()


def display_window(
    image: np.ndarray, modality: str | None = None, window: Sequence[float] | None = None
) -> tuple[float, float]:
    """The grey levels shown from black to white.

    Args:
        image: ``(k, j, i)`` intensities.
        modality: the model's (``"CT"``, ``"MR"``, ...).
        window: ``(centre, width)`` the model card names (a lung window for the chest-CT model), used as is.

    Returns:
        ``(low, high)``: the card's window; for CT without one a soft-tissue window (40 / 400 HU);
        for MR the 1st to 99.5th percentile of the voxels above the volume's 20th percentile (the
        head, not the air around it); otherwise the 0.5th to 99.5th percentile.
    """
    if window is not None:
        centre, width = (float(v) for v in window)
        return centre - width / 2, centre + width / 2
    if modality == "CT":
        centre, width = SOFT_TISSUE_WINDOW
        return centre - width / 2, centre + width / 2
    values = np.asarray(image, np.float32).ravel()
    if modality == "MR":
        inside = values[values > np.percentile(values, 20)]
        low, high = (float(v) for v in np.percentile(inside if inside.size else values, [1, 99.5]))
    else:
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    return low, max(high, low + 1e-6)


@dataclass(frozen=True)
class Layers:
    """What a picture shows, every array ``(k, j, i)`` on ``geometry``.

    Attributes:
        image: intensities; ``window``: the ``(low, high)`` shown from black to white.
        labels: the segmentation (0 background, n class n).
        risk: estimated probability of error in [0, 1].
        fragile: bool fragile voxels, or None.
        oblique: the arrays were reordered from an oblique grid (shown on its nearest axes).
    """

    image: np.ndarray
    labels: np.ndarray
    risk: np.ndarray
    fragile: np.ndarray | None
    geometry: Geometry
    window: tuple[float, float]
    oblique: bool = False

    def in_patient_axes(self, centre_kji: Sequence[int]) -> tuple[Layers, tuple[int, int, int]]:
        """The same voxels with the array axes (superior, posterior, left), and where ``centre_kji`` went."""
        order = AxisOrder.for_geometry(self.geometry, "LPS")
        shape = self.geometry.shape
        centre = tuple(
            shape[a] - 1 - int(centre_kji[a]) if flipped else int(centre_kji[a])
            for a, flipped in zip(order.permutation, order.flips, strict=True)
        )
        arrays = [
            None if a is None else order.to_network(a) for a in (self.image, self.labels, self.risk, self.fragile)
        ]
        grid = order.geometry(self.geometry)
        oblique = not np.allclose(np.abs(grid.direction_matrix), np.eye(3), atol=1e-3)
        image, labels, risk, fragile = arrays
        return replace(
            self, image=image, labels=labels, risk=risk, fragile=fragile, geometry=grid, oblique=oblique
        ), centre


def _plane(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    return np.take(array, index, axis=PLANE_AXIS[plane])


def _extent(layers: Layers, plane: str) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of a plane in mm, for imshow (axial rows run downwards)."""
    (d, h, w), (sx, sy, sz) = layers.geometry.shape, layers.geometry.spacing
    width, height = {"axial": (w * sx, h * sy), "coronal": (w * sx, d * sz), "sagittal": (h * sy, d * sz)}[plane]
    return (0.0, width, height, 0.0) if plane == "axial" else (0.0, width, 0.0, height)


def _scale_bar_mm(width_mm: float) -> float:
    """A round length about a fifth of the view's width."""
    for length in (1, 2, 5, 10, 20, 50, 100):
        if length >= width_mm / 5:
            return float(length)
    return 200.0


def plane_position(layers: Layers, plane: str, index: int, centre: Sequence[int]) -> str:
    """The RAS coordinate of a slice through ``centre`` (reordered ``(k, j, i)``), e.g. ``"S -119.6 mm"``."""
    ijk = np.array(centre[::-1], np.float64)
    ijk[2 - PLANE_AXIS[plane]] = index
    letter, axis = POSITION[plane]
    return f"{letter} {layers.geometry.ijk_to_physical(ijk, frame='RAS')[axis]:.1f} mm"


def draw_plane(ax, layers: Layers, plane: str, index: int, letters: bool = True, scale_bar: bool = True) -> None:
    """One slice of ``layers`` (already in patient axes) with its overlays on a matplotlib axis."""
    from matplotlib import patheffects

    low, high = layers.window
    grey = (_plane(layers.image, plane, index) - low) / (high - low)
    extent = _extent(layers, plane)
    origin = "upper" if plane == "axial" else "lower"
    shown = palette.blend_risk(grey, _plane(layers.risk, plane, index))
    ax.imshow(shown, origin=origin, extent=extent, interpolation="nearest")
    labels = _plane(layers.labels, plane, index)
    outlines = [(labels == value, palette.class_colour(int(value))) for value in np.unique(labels) if value > 0]
    if layers.fragile is not None:
        outlines.append((_plane(layers.fragile, plane, index), palette.FRAGILE_COLOUR))
    for mask, colour in outlines:
        if mask.any():
            ax.contour(
                mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2, origin=origin, extent=extent
            )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_axis_off()
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    if letters:  # at the middle of each edge of the image, in mm
        left, right, bottom, top = extent
        inset_x, inset_y = (right - left) * 0.03, (top - bottom) * 0.03
        places = (
            (left + inset_x, (bottom + top) / 2, "left", "center"),
            (right - inset_x, (bottom + top) / 2, "right", "center"),
            ((left + right) / 2, top - inset_y, "center", "top"),
            ((left + right) / 2, bottom + inset_y, "center", "bottom"),
        )
        for letter, (x, y, ha, va) in zip(EDGE_LETTERS[plane], places, strict=True):
            ax.text(x, y, letter, ha=ha, va=va, color="white", fontsize=11, fontweight="bold", path_effects=outline)
    if scale_bar:
        length = _scale_bar_mm(extent[1])
        bottom, top = extent[2], extent[3]  # as shown (the axial rows run downwards)
        x0, y0 = extent[1] * 0.06, bottom + (top - bottom) * 0.08
        ax.plot([x0, x0 + length], [y0, y0], color="white", linewidth=3, solid_capstyle="butt", path_effects=outline)
        ax.text(x0 + length / 2, y0, f"{length:g} mm\n", ha="center", va="center", color="white", fontsize=8,
                path_effects=outline)  # fmt: skip


def _colour_bar(ax) -> None:
    """The heatmap's scale from the floor to its maximum, blended over black (top) and white (bottom) as shown."""
    risks = np.linspace(0.0, palette.RISK_MAX, 256)
    rows = [palette.blend_risk(np.full_like(risks, level), risks) for level in (0.0, 1.0)]
    ax.imshow(np.stack(rows), aspect="auto", extent=(0.0, palette.RISK_MAX, 0.0, 1.0), interpolation="nearest")
    ticks = [palette.RISK_FLOOR, 0.2, 0.3, 0.4, palette.RISK_MAX]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + [f"≥ {palette.RISK_MAX:g}"], fontsize=8, color="white")
    ax.set_yticks([0.25, 0.75], ["on white", "on black"], fontsize=7, color="white")
    ax.tick_params(colors="white", length=2)
    ax.set_title(
        f"estimated probability of error (heatmap; below {palette.RISK_FLOOR:g} not shown)", fontsize=9, color="white"
    )


def _legend(figure, layers: Layers, class_names: Sequence[str], x: float) -> None:
    from matplotlib.lines import Line2D

    values = [int(v) for v in np.unique(layers.labels) if v > 0]
    handles = [Line2D([], [], color=palette.class_colour(v), linewidth=2) for v in values]
    names = [f"segmentation: {class_names[v] if v < len(class_names) else f'class {v}'}" for v in values]
    if layers.fragile is not None:
        handles.append(Line2D([], [], color=palette.FRAGILE_COLOUR, linewidth=2))
        names.append("fragile voxels (an equally good model labels them otherwise)")
    if handles:
        legend = figure.legend(handles, names, loc="lower left", bbox_to_anchor=(x, 0.0), fontsize=8, frameon=False)
        for text in legend.get_texts():
            text.set_color("white")


def slice_panel(
    layers: Layers,
    centre_kji: Sequence[int],
    class_names: Sequence[str] = (),
    title: str = "",
    inches: float = 4.0,
) -> bytes:
    """PNG of the axial, coronal and sagittal views through ``centre_kji``, with a colour bar and a legend.

    Args:
        layers: what to show, on the input's grid (any storage; see the module docstring).
        centre_kji: the voxel ``(k, j, i)`` of the input's array the three views cross at.
        class_names: the model's classes (0 background), for the legend.
        title: drawn above the panel.
        inches: the width of each view (at 110 dots per inch).
    """
    plt = _pyplot()
    shown, centre = layers.in_patient_axes(centre_kji)
    figure = plt.figure(figsize=(3 * inches, inches + 1.0), dpi=110, facecolor="black")
    top = inches / (inches + 1.0)
    for column, plane in enumerate(PLANES):
        ax = figure.add_axes((column / 3 + 0.005, 1.0 - top, 1 / 3 - 0.01, top - 0.06))
        index = centre[PLANE_AXIS[plane]]
        draw_plane(ax, shown, plane, index)
        ax.set_title(f"{plane}   {plane_position(shown, plane, index, centre)}", color="white", fontsize=10)
    _colour_bar(figure.add_axes((0.05, 0.07, 0.38, 0.06)))
    _legend(figure, shown, class_names, 0.5)
    notes = []
    if shown.oblique:
        notes.append("oblique scan: shown on its nearest patient axes")
    if notes or title:
        figure.suptitle(" — ".join([title, *notes]) if title else notes[0], color="white", fontsize=10, y=0.995)
    return _png(figure)


def thumbnail(layers: Layers, centre_kji: Sequence[int]) -> bytes:
    """A small PNG of the axial view through ``centre_kji`` with the overlays and its letters (for the worklist)."""
    plt = _pyplot()
    shown, centre = layers.in_patient_axes(centre_kji)
    figure, ax = plt.subplots(figsize=(2.2, 2.2), dpi=90, facecolor="black")
    draw_plane(ax, shown, "axial", centre[0], scale_bar=False)
    return _png(figure)


def estimated_risk_coverage(risk: np.ndarray) -> bytes:
    """PNG of the estimated risk-coverage curve of the voxels given (the segmentation and its margin).

    Voxels are accepted from the least to the most risky (by ``risk``); the curve is the mean
    estimated probability of error among the accepted ones. Without ground truth this is the
    model's own estimate, not a measured error rate.
    """
    plt = _pyplot()
    ordered = np.sort(np.asarray(risk, np.float64).ravel())
    figure, ax = plt.subplots(figsize=(4.2, 3.0), dpi=100)
    if ordered.size:
        coverage = np.arange(1, ordered.size + 1) / ordered.size
        ax.plot(coverage, np.cumsum(ordered) / np.arange(1, ordered.size + 1), color="#b5367a")
    ax.set_xlabel("coverage (share of voxels accepted, safest first)")
    ax.set_ylabel("estimated risk (mean P(error))")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _png(figure)
