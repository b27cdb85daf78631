"""The colours of the results, one definition for the report, the worklist thumbnails, the screenshots and Slicer.

The risk heatmap (an estimated probability of error) is shown as Slicer's slice views can show it:
voxels below :data:`RISK_FLOOR` are transparent, the others are blended over the image with one
opacity (Slicer's foreground layer ignores a colour table's alpha, so a transparency ramp could
not look the same there). Its colours run from bright yellow at the floor through orange to red at
:data:`RISK_MAX` and above: lightness falls as the risk rises, and there is no dark end, so a
moderate risk shows over dark lung as well as over bright tissue (Inferno's dark purple low end
vanished over dark lung; ``benchmarks/risk_display.py`` measures both). The outlines are blue
(segmentation) and magenta (fragile voxels): hues the heatmap never takes.
"""

from __future__ import annotations

import numpy as np

RISK_FLOOR = 0.1  # below: transparent (also the default region threshold: what is shown can form a region)
RISK_MAX = 0.5  # and above: the last colour (a voxel as likely wrong as right)
RISK_OPACITY = 0.6  # the heatmap's blend over the image
# (risk, R, G, B) in [0, 1]: the colour at each risk, linear in between
RISK_ANCHORS = (
    (0.0, 1.0, 0.93, 0.2),
    (0.1, 1.0, 0.93, 0.2),
    (0.2, 1.0, 0.7, 0.05),
    (0.3, 1.0, 0.45, 0.0),
    (0.4, 0.93, 0.2, 0.05),
    (0.5, 0.8, 0.0, 0.1),
)
# segment colours of foreground classes 1, 2, ... (RGB in [0, 1]), then repeated
CLASS_COLOURS = ((0.13, 0.65, 0.95), (0.35, 0.8, 0.35), (0.95, 0.8, 0.2), (0.75, 0.45, 0.9))
FRAGILE_COLOUR = (1.0, 0.25, 0.85)


def class_colour(value: int) -> tuple[float, float, float]:
    """The RGB colour of foreground class ``value`` (1, 2, ...)."""
    return CLASS_COLOURS[(value - 1) % len(CLASS_COLOURS)]


def risk_colours(risk: np.ndarray) -> np.ndarray:
    """The heatmap's RGB colour of each risk value.

    Args:
        risk: any shape, estimated probabilities of error in [0, 1].

    Returns:
        ``risk.shape + (3,)`` float RGB in [0, 1] (values at or above :data:`RISK_MAX` take the last colour).
    """
    anchors = np.asarray(RISK_ANCHORS)
    values = np.clip(np.asarray(risk, np.float64), 0.0, RISK_MAX)
    return np.stack([np.interp(values, anchors[:, 0], anchors[:, c]) for c in (1, 2, 3)], axis=-1)


def risk_table(count: int = 256) -> np.ndarray:
    """``(count, 3)`` RGB of the risk scale at ``count`` evenly spaced risks from 0 to :data:`RISK_MAX`."""
    return risk_colours(np.linspace(0.0, RISK_MAX, count))


def blend_risk(grey: np.ndarray, risk: np.ndarray, opacity: float = RISK_OPACITY) -> np.ndarray:
    """The heatmap over an image, as the slice views blend it.

    Args:
        grey: ``(...)`` display intensities in [0, 1] (after windowing).
        risk: ``(...)`` estimated probabilities of error, the same shape.
        opacity: the heatmap's blend.

    Returns:
        ``(..., 3)`` RGB in [0, 1]: the grey image, and ``opacity * colour + (1 - opacity) * grey``
        where the risk reaches :data:`RISK_FLOOR`.
    """
    grey = np.clip(np.asarray(grey, np.float64), 0.0, 1.0)[..., None].repeat(3, axis=-1)
    shown = (np.asarray(risk) >= RISK_FLOOR)[..., None]
    return np.where(shown, opacity * risk_colours(risk) + (1.0 - opacity) * grey, grey)
