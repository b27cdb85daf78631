"""Pictures for the reports, drawn with matplotlib (Agg) into PNG bytes.

Slices are shown as stored, with the physical aspect of their voxels: axial = a k-plane (rows j,
columns i), coronal = a j-plane (rows k), sagittal = an i-plane (rows k, columns j), k drawn
upwards. Over the image: the estimated probability of error in Inferno from 0 to 0.5 (the scale the
Slicer module uses; below 0.05 transparent), the segmentation's outline in cyan and the fragile
voxels' outline in green.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from ..errors import SegUncertaintyError

RISK_MAX = 0.5
RISK_FLOOR = 0.05
PLANES = ("axial", "coronal", "sagittal")


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


def _plane(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    if plane == "axial":
        return array[index]
    if plane == "coronal":
        return array[:, index, :]
    return array[:, :, index]


def _aspect(plane: str, spacing: Sequence[float]) -> float:
    si, sj, sk = spacing
    return {"axial": sj / si, "coronal": sk / si, "sagittal": sk / sj}[plane]


def intensity_window(image: np.ndarray) -> tuple[float, float]:
    """Display window of an image: its 0.5th and 99.5th percentiles."""
    low, high = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    return low, max(high, low + 1e-6)


def draw_plane(ax, image, labels, risk, fragile, plane, index, spacing, window) -> None:
    """One slice with its overlays on a matplotlib axis (see the module docstring)."""
    origin = "upper" if plane == "axial" else "lower"
    aspect = _aspect(plane, spacing)
    ax.imshow(_plane(image, plane, index), cmap="gray", vmin=window[0], vmax=window[1], origin=origin, aspect=aspect)
    shown = np.ma.masked_less(_plane(risk, plane, index), RISK_FLOOR)
    ax.imshow(shown, cmap="inferno", vmin=0.0, vmax=RISK_MAX, alpha=0.65, origin=origin, aspect=aspect)
    for mask, colour in ((labels > 0, "#00e5ff"), (fragile, "#39ff14")):
        if mask is not None and _plane(mask, plane, index).any():
            ax.contour(
                _plane(mask, plane, index).astype(np.float32),
                levels=[0.5],
                colors=colour,
                linewidths=1.0,
                origin=origin,
            )
    ax.set_axis_off()


def slice_panel(
    image: np.ndarray,
    labels: np.ndarray,
    risk: np.ndarray,
    fragile: np.ndarray | None,
    centre_kji: Sequence[int],
    spacing: Sequence[float],
    title: str = "",
) -> bytes:
    """PNG of the axial, coronal and sagittal slices through ``centre_kji`` with the overlays.

    Args:
        image: ``(k, j, i)`` intensities.
        labels: ``(k, j, i)`` segmentation.
        risk: ``(k, j, i)`` estimated probability of error in [0, 1].
        fragile: ``(k, j, i)`` bool fragile voxels, or None.
        centre_kji: the voxel the three planes cross at.
        spacing: voxel size ``(i, j, k)`` in mm.
        title: drawn above the panel.
    """
    plt = _pyplot()
    window = intensity_window(image)
    figure, axes = plt.subplots(1, 3, figsize=(9.6, 3.4), dpi=100, facecolor="black")
    for ax, plane, index in zip(axes, PLANES, centre_kji, strict=True):
        draw_plane(ax, image, labels, risk, fragile, plane, int(index), spacing, window)
        ax.set_title(f"{plane} ({'kji'[PLANES.index(plane)]} = {int(index)})", color="white", fontsize=9)
    if title:
        figure.suptitle(title, color="white", fontsize=10)
    return _png(figure)


def thumbnail(image, labels, risk, fragile, centre_kji, spacing) -> bytes:
    """A small PNG of the axial slice through ``centre_kji`` with the overlays (for the worklist)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(1.8, 1.8), dpi=80, facecolor="black")
    draw_plane(ax, image, labels, risk, fragile, "axial", int(centre_kji[0]), spacing, intensity_window(image))
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
