"""Uncertainty maps computed from class probabilities alone (single-pass baselines)."""

from __future__ import annotations

import numpy as np


def max_softmax_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c`` per voxel from ``(C, ...)`` probabilities; higher = more likely wrong."""
    return 1.0 - np.asarray(probabilities).max(axis=0)


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``-sum_c p_c log p_c`` (nats) per voxel from ``(C, ...)`` probabilities."""
    p = np.asarray(probabilities, np.float64)
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0)
