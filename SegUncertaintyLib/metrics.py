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


def auroc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Error-detection AUROC: ``P(u_err > u_ok) + 0.5 P(u_err = u_ok)`` (Mann-Whitney, ties averaged).

    Args:
        scores: uncertainty per voxel (higher = more likely wrong), any shape.
        errors: bool per voxel, same shape (the voxel set is whatever the caller passes).

    Returns:
        AUROC in [0, 1]; NaN when there are no errors or no correct voxels.
    """
    from scipy.stats import rankdata

    scores, errors = np.asarray(scores, np.float64).ravel(), np.asarray(errors, bool).ravel()
    n_err = int(errors.sum())
    n_ok = errors.size - n_err
    if n_err == 0 or n_ok == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[errors].sum() - n_err * (n_err + 1) / 2.0) / (n_err * n_ok))


def risk_coverage(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve: keep voxels in order of increasing uncertainty.

    Voxels with equal scores are kept as a group in random order, so within a tie the expected
    risk is used (the curve then does not depend on how a sort breaks ties).

    Returns:
        ``coverage`` ``(N,)`` = k / N and ``risk`` ``(N,)`` = error rate among the k most certain voxels.
    """
    scores, errors = np.asarray(scores, np.float64).ravel(), np.asarray(errors, bool).ravel()
    order = np.argsort(scores, kind="stable")
    s, e = scores[order], errors[order].astype(np.float64)
    n = s.size
    k = np.arange(1, n + 1, dtype=np.float64)
    # tie blocks: [start, end) of equal scores
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], n]
    block_errors = np.add.reduceat(e, starts)
    before = np.r_[0.0, np.cumsum(block_errors)[:-1]]
    block_of = np.repeat(np.arange(len(starts)), ends - starts)
    position = k - starts[block_of]  # 1.. within the block
    expected_errors = before[block_of] + position * (block_errors / (ends - starts))[block_of]
    return k / n, expected_errors / k


def aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean risk over coverages k/N), in raw units (x1000 in papers).

    Random scores give about the error rate; lower is better.
    """
    return float(risk_coverage(scores, errors)[1].mean())


def e_aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """AURC minus the AURC of a perfect ranking (all errors last); 0 for a perfect ranking."""
    errors = np.asarray(errors, bool).ravel()
    n, n_err = errors.size, int(errors.sum())
    k = np.arange(1, n + 1, dtype=np.float64)
    optimal = float((np.maximum(0.0, k - (n - n_err)) / k).mean())
    return aurc(scores, errors) - optimal


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width bins: ``sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``.

    Args:
        confidence: probability of the predicted class per voxel, in [0, 1].
        correct: bool per voxel, the prediction equals the reference.
        bins: number of bins over (0, 1]; bin b holds confidences in ``((b-1)/bins, b/bins]``.
    """
    confidence = np.asarray(confidence, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, correct, bins) - np.bincount(index, confidence, bins))
    return float(gap.sum() / max(count.sum(), 1))


def region_around(masks: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxels within ``radius_mm`` of any mask: the voxel set "around the prediction and the raters".

    Every error lies in (prediction ∪ reference); the margin adds the hard correct voxels next to
    boundaries. Distances are physical, so anisotropic grids are fine.

    Args:
        masks: ``(M, k, j, i)`` bool masks, e.g. the prediction and every rater.
        radius_mm: margin in mm.
        spacing: voxel size in mm along ``(i, j, k)`` (ITK order).

    Returns:
        ``(k, j, i)`` bool mask.
    """
    from scipy.ndimage import distance_transform_edt

    union = np.asarray(masks, bool).any(axis=0)
    if not union.any():
        return union
    return distance_transform_edt(~union, sampling=tuple(spacing)[::-1]) <= radius_mm
