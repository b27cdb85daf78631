"""Conformal risk control: a threshold whose expected loss on a new case is at most alpha.

After Angelopoulos et al., "Conformal Risk Control" (ICLR 2024). For calibration cases
``i = 1..n`` with losses ``L_i(t)`` in ``[0, B]`` that never fall as the threshold ``t`` rises
(flagging less never leaves less unreviewed), the largest ``t`` with

    (n * mean_i L_i(t) + B) / (n + 1) <= alpha

gives ``E[L_new(t)] <= alpha`` for a new case exchangeable with the calibration cases. The
``+ B`` and ``n + 1`` are the finite-sample correction: with ``B / (n + 1) > alpha`` no threshold
can be guaranteed, and none is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SegUncertaintyError


@dataclass(frozen=True)
class RiskControl:
    """The threshold chosen on a calibration set, and what the guarantee rests on.

    Attributes:
        alpha: the risk bound asked for (the loss's unit, e.g. a share of wrong voxels).
        threshold: the largest candidate threshold whose corrected risk is at most alpha.
        calibration_cases: n, the cases the guarantee is fitted on.
        corrected_risk: ``(n * mean L(threshold) + B) / (n + 1)``, at most alpha.
    """

    alpha: float
    threshold: float
    calibration_cases: int
    corrected_risk: float


def control_risk(losses: np.ndarray, thresholds: np.ndarray, alpha: float, bound: float = 1.0) -> RiskControl | None:
    """Choose the threshold that bounds the expected loss on a new case by ``alpha``.

    Each case's loss curve is first made non-decreasing in the threshold (its running maximum),
    which only raises losses: the guarantee needs monotone losses, and a curve that dips (regions
    that merge at one threshold and part at the next) is then bounded from above.

    Args:
        losses: ``(n, T)`` loss of calibration case ``i`` at ``thresholds[j]``, in ``[0, bound]``.
        thresholds: ``(T,)`` candidate thresholds, strictly increasing.
        alpha: the bound on the expected loss, in ``(0, bound)``.
        bound: B, the largest loss a case can have.

    Returns:
        The :class:`RiskControl`, or None when no candidate threshold meets the bound (among them
        when the calibration set is too small: ``bound / (n + 1) > alpha``).
    """
    losses = np.asarray(losses, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim != 1 or losses.ndim != 2 or losses.shape[1] != thresholds.size or losses.shape[0] == 0:
        raise SegUncertaintyError(f"losses must be (cases, {thresholds.size} thresholds), got {losses.shape}")
    if np.any(np.diff(thresholds) <= 0):
        raise SegUncertaintyError("the candidate thresholds must be strictly increasing")
    if not 0 < alpha < bound:
        raise SegUncertaintyError(f"alpha must lie in (0, {bound:g}), got {alpha:g}")
    if not np.isfinite(losses).all() or losses.min() < 0 or losses.max() > bound:
        raise SegUncertaintyError(f"every loss must be finite and in [0, {bound:g}]")
    n = losses.shape[0]
    corrected = (n * np.maximum.accumulate(losses, axis=1).mean(axis=0) + bound) / (n + 1)
    allowed = np.flatnonzero(corrected <= alpha)
    if allowed.size == 0:
        return None
    j = int(allowed[-1])  # the corrected risk is non-decreasing: every lower threshold is allowed too
    return RiskControl(float(alpha), float(thresholds[j]), n, float(corrected[j]))
