"""Segmentation metrics.

Conventions: masks are bool arrays of any shape; two empty masks agree perfectly (Dice 1), which
matters on multi-rater data where a rater may mark nothing.
"""

from __future__ import annotations

import numpy as np


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice = 2 |P ∩ R| / (|P| + |R|) over all voxels; 1.0 when both masks are empty.

    Args:
        prediction: bool mask, any shape.
        reference: bool mask, same shape.
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"shapes differ: {prediction.shape} vs {reference.shape}")
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def majority_vote(raters: np.ndarray) -> np.ndarray:
    """Voxels marked by at least half of the raters (2 of 4 counts).

    Args:
        raters: ``(R, ...)`` bool masks, one per rater.

    Returns:
        ``(...)`` bool mask.
    """
    return np.asarray(raters, bool).mean(axis=0) >= 0.5
