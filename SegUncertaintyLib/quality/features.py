"""Per-case features from a prediction's maps: what a quality predictor and a worklist read.

Voxel maps are reduced where a segmentation's errors are: the predicted foreground (``fg``) and the
band within ``BAND_VOXELS`` voxels of the predicted outline (``band``); whole-volume means would
mostly average background. Every feature is a plain float; one that a prediction cannot give (no
head, no fragility search, no samples) is absent, not zero.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..prediction import Prediction
from ..uncertainty import max_softmax_uncertainty, predictive_entropy
from .volume import slabs

BAND_VOXELS = 2

# Single scores, higher = worse, one per uncertainty source: compared alone and aggregated.
SOURCE_SCORES = {
    "max-softmax": "max_softmax:band_mean",
    "entropy": "entropy:band_mean",
    "segwithu": "error_probability:band_mean",
    "expected Dice (calibrated)": "expected_dice_gap",
    "volume interval": "interval_relative_width",
    "ensemble MI": "mutual_information:band_mean",
    "fragility": "fragile_fraction",
}


def regions(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fg, band)``, ``(k, j, i)`` bool: the predicted foreground and the voxels near its outline."""
    fg = labels > 0
    if not fg.any():
        return fg, fg
    # within the foreground's box grown by the band (what lies beyond is background either way): a
    # nodule's band on a CT is then a few thousand voxels of work, not 78 million
    (box,) = ndimage.find_objects(fg.astype(np.uint8))
    box = tuple(slice(max(s.start - BAND_VOXELS - 1, 0), s.stop + BAND_VOXELS + 1) for s in box)
    inner = fg[box]
    band = np.zeros_like(fg)
    grown = ndimage.binary_dilation(inner, iterations=BAND_VOXELS)
    band[box] = grown & ~ndimage.binary_erosion(inner, iterations=BAND_VOXELS)
    return fg, band


def _mean(values: np.ndarray, where: np.ndarray | None) -> float:
    """The mean of ``values`` over ``where`` (all of them when None); 0 when there is none."""
    values = values if where is None else values[where]
    return float(values.mean(dtype=np.float64)) if values.size else 0.0


def expected_dice(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Dice the segmentation would have if the probabilities were true: ``2 sum_fg p / (sum p + |fg|)``.

    Args:
        probabilities: ``(C, k, j, i)`` (calibrated) class probabilities.
        labels: ``(k, j, i)`` the segmentation.
    """
    fg = labels > 0
    total, inside = float(fg.sum()), 0.0
    for slab in slabs(labels.shape):
        p = 1.0 - probabilities[0][slab].astype(np.float64)  # probability of any foreground class
        total += float(p.sum())
        inside += float(p[fg[slab]].sum())
    return 2.0 * inside / total if total > 0 else 1.0


def case_features(prediction: Prediction, fragile: np.ndarray | None = None) -> dict[str, float]:
    """Scalar features of one prediction (see the module docstring).

    Args:
        prediction: probabilities ``(C, k, j, i)``, labels, and whichever maps the method gave
            (head maps, sampled maps, ``flip_mass`` of a fragility search), all on the input grid.
        fragile: ``(k, j, i)`` bool voxels an admissible adversary flips, when the search ran.

    Returns:
        Feature name -> value: volumes in mL, map means (``<map>:band_mean``, ``<map>:fg_mean``),
        ``expected_dice`` and its gap ``1 - expected_dice``, the interval's relative width, and
        ``fragile_fraction`` (fragile voxels per predicted voxel).
    """
    from ..prediction import VOLUME_INTERVAL_LEVELS, best_probabilities

    voxel_ml = prediction.geometry.voxel_volume_ml
    labels = prediction.labels
    fg, band = regions(labels)
    best = best_probabilities(prediction)
    foreground = 1.0 - best[0]
    volume = float(fg.sum()) * voxel_ml
    high, low = (float(np.count_nonzero(foreground >= level)) * voxel_ml for level in VOLUME_INTERVAL_LEVELS)
    features = {
        "volume_ml": volume,
        "log_volume": math.log1p(volume * 1000.0),  # in log(1 + mm^3): an empty prediction is 0
        "expected_volume_ml": float(foreground.sum(dtype=np.float64)) * voxel_ml,
        "interval_relative_width": (low - high) / max(volume, voxel_ml),
        "expected_dice": expected_dice(best, labels),
        # from the band's voxels only (the same values, in the same order, as a whole-volume map gives)
        "max_softmax:band_mean": _mean(max_softmax_uncertainty(prediction.probabilities[:, band]), None),
        "entropy:band_mean": _mean(predictive_entropy(prediction.probabilities[:, band]), None),
    }
    features["expected_dice_gap"] = 1.0 - features["expected_dice"]
    for name in ("error_probability", "ranking", "calibration", "epistemic", "mutual_information", "flip_mass"):
        if name in prediction.maps:
            features[f"{name}:band_mean"] = _mean(prediction.maps[name], band)
            features[f"{name}:fg_mean"] = _mean(prediction.maps[name], fg)
    if "error_probability" in prediction.maps:
        features["expected_wrong_ml"] = float(prediction.maps["error_probability"][fg | band].sum()) * voxel_ml
    if fragile is not None:
        features["fragile_fraction"] = float(np.count_nonzero(fragile)) / max(int(fg.sum()), 1)
    return features
