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
    """The label most raters gave each voxel.

    Ties go to the higher class: for one foreground class this is "marked by at least half of the
    raters" (2 of 4 counts), the usual LIDC consensus.

    Args:
        raters: ``(R, ...)`` label maps, one per rater: bool masks or integer labels.

    Returns:
        ``(...)`` bool mask for bool input, else uint8 labels.
    """
    raters = np.asarray(raters)
    if raters.dtype == bool:
        return raters.mean(axis=0) >= 0.5
    counts = np.stack([(raters == c).sum(axis=0) for c in range(int(raters.max()) + 1)])
    return (len(counts) - 1 - np.argmax(counts[::-1], axis=0)).astype(np.uint8)
