"""Distribution-free guarantees fitted on calibration cases: conformal risk control, conformal
interval scales, and a bound on the bad cases among those accepted without review.

* :class:`RiskCurve` / :func:`control_risk`: conformal risk control (Angelopoulos et al.,
  "Conformal Risk Control", ICLR 2024). For calibration cases ``i = 1..n`` with losses ``L_i(t)``
  in ``[0, B]`` that never fall as the threshold ``t`` rises (flagging less never leaves less
  unreviewed), the largest ``t`` with ``(n * mean_i L_i(t) + B) / (n + 1) <= alpha`` gives
  ``E[L_new(t)] <= alpha`` for a new case exchangeable with the calibration cases. The ``+ B`` and
  ``n + 1`` are the finite-sample correction: with ``B / (n + 1) > alpha`` no threshold can be
  guaranteed, and none is returned.
* :func:`conformal_scale`: the same control for an interval ``centre +- q * width``: the smallest
  ``q`` whose expected share of a new case's observations outside is at most ``1 - coverage``.
* :func:`bound_accepted_risk`: Learn then Test (Angelopoulos et al., 2021) with a Bonferroni
  correction over a fixed grid of acceptance thresholds: with probability at least ``1 - epsilon``
  over the calibration draw, the share of bad cases among the accepted ones is at most ``delta``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

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


@dataclass(frozen=True)
class RiskCurve:
    """What conformal risk control keeps of a calibration set: enough to control any alpha later.

    Attributes:
        thresholds: ``(T,)`` candidate thresholds, strictly increasing.
        mean_loss: ``(T,)`` mean over the calibration cases of each case's running-maximum loss.
        cases: n, the calibration cases.
        bound: B, the largest loss a case can have.
    """

    thresholds: tuple[float, ...]
    mean_loss: tuple[float, ...]
    cases: int
    bound: float = 1.0

    @classmethod
    def fit(cls, losses: np.ndarray, thresholds: np.ndarray, bound: float = 1.0) -> RiskCurve:
        """The curve of ``(n, T)`` calibration losses at ``(T,)`` thresholds, each in ``[0, bound]``.

        Each case's loss curve is first made non-decreasing in the threshold (its running maximum),
        which only raises losses: the guarantee needs monotone losses, and a curve that dips is then
        bounded from above.
        """
        losses = np.asarray(losses, np.float64)
        thresholds = np.asarray(thresholds, np.float64)
        if thresholds.ndim != 1 or losses.ndim != 2 or losses.shape[1] != thresholds.size or losses.shape[0] == 0:
            raise SegUncertaintyError(f"losses must be (cases, {thresholds.size} thresholds), got {losses.shape}")
        if np.any(np.diff(thresholds) <= 0):
            raise SegUncertaintyError("the candidate thresholds must be strictly increasing")
        if not np.isfinite(losses).all() or losses.min() < 0 or losses.max() > bound:
            raise SegUncertaintyError(f"every loss must be finite and in [0, {bound:g}]")
        mean = np.maximum.accumulate(losses, axis=1).mean(axis=0)
        return cls(tuple(thresholds.tolist()), tuple(mean.tolist()), int(losses.shape[0]), float(bound))

    def control(self, alpha: float) -> RiskControl | None:
        """The largest threshold whose corrected risk is at most ``alpha`` in ``(0, bound)``; None
        when none is (among them when the calibration set is too small: ``bound / (n + 1) > alpha``)."""
        if not 0 < alpha < self.bound:
            raise SegUncertaintyError(f"alpha must lie in (0, {self.bound:g}), got {alpha:g}")
        n = self.cases
        corrected = (n * np.asarray(self.mean_loss) + self.bound) / (n + 1)
        allowed = np.flatnonzero(corrected <= alpha)
        if allowed.size == 0:
            return None
        j = int(allowed[-1])  # the corrected risk is non-decreasing: every lower threshold is allowed too
        return RiskControl(float(alpha), self.thresholds[j], n, float(corrected[j]))

    def to_dict(self) -> dict:
        return {**asdict(self), "thresholds": list(self.thresholds), "mean_loss": list(self.mean_loss)}

    @classmethod
    def from_dict(cls, data: dict) -> RiskCurve:
        curve = cls(tuple(map(float, data["thresholds"])), tuple(map(float, data["mean_loss"])), int(data["cases"]),
                    float(data.get("bound", 1.0)))  # fmt: skip
        if len(curve.thresholds) != len(curve.mean_loss) or curve.cases < 1:
            raise SegUncertaintyError("a risk curve needs one mean loss per threshold and at least one case")
        return curve


def control_risk(losses: np.ndarray, thresholds: np.ndarray, alpha: float, bound: float = 1.0) -> RiskControl | None:
    """Choose the threshold that bounds the expected loss on a new case by ``alpha``.

    Args:
        losses: ``(n, T)`` loss of calibration case ``i`` at ``thresholds[j]``, in ``[0, bound]``.
        thresholds: ``(T,)`` candidate thresholds, strictly increasing.
        alpha: the bound on the expected loss, in ``(0, bound)``.
        bound: B, the largest loss a case can have.

    Returns:
        The :class:`RiskControl`, or None when no candidate threshold meets the bound.
    """
    if not 0 < alpha < bound:
        raise SegUncertaintyError(f"alpha must lie in (0, {bound:g}), got {alpha:g}")
    return RiskCurve.fit(losses, thresholds, bound).control(alpha)


def share_below(scores: np.ndarray, members: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of the ``members`` voxels whose score is below each threshold (0 where there is none).

    The loss of one case for conformal risk control: with ``scores`` the estimated probability of
    error and ``members`` the wrong voxels, the share of the errors a review of every voxel at or
    above the threshold leaves unreviewed; with the foreground probability and the reference's
    foreground, the share of the structure outside the outline ``p >= threshold`` (its
    false-negative rate).

    Args:
        scores: any shape.
        members: bool, the same shape.
        thresholds: ``(T,)``.

    Returns:
        ``(T,)`` in [0, 1], non-decreasing where the thresholds increase.
    """
    inside = np.sort(np.asarray(scores)[np.asarray(members, bool)].astype(np.float64, copy=False))
    if inside.size == 0:
        return np.zeros(len(thresholds))
    return np.searchsorted(inside, np.asarray(thresholds, np.float64), side="left") / inside.size


def conformal_scale(scores: np.ndarray, coverage: float = 0.9) -> float | None:
    """The smallest scale ``q`` such that ``centre +- q * width`` holds, on average over new cases,
    at least ``coverage`` of a case's observations (each case may have several, e.g. four raters).

    Args:
        scores: ``(n, m)`` for each calibration case its ``m`` observations' ``|observed - centre| / width``.
        coverage: in (0, 1).

    Returns:
        ``q``, or None when ``n`` cases cannot give the coverage (``1 / (n + 1) > 1 - coverage``).
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0 or not np.isfinite(scores).all() or scores.min() < 0:
        raise SegUncertaintyError(
            f"scores must be a finite non-negative (cases, observations) array, got {scores.shape}"
        )
    if not 0 < coverage < 1:
        raise SegUncertaintyError(f"coverage must lie in (0, 1), got {coverage:g}")
    n = scores.shape[0]
    candidates = np.unique(scores)
    # loss of case i at q: the share of its observations above q (non-increasing in q)
    outside = np.stack([1.0 - np.searchsorted(np.sort(row), candidates, side="right") / row.size for row in scores])
    corrected = (n * outside.mean(axis=0) + 1.0) / (n + 1)
    allowed = np.flatnonzero(corrected <= 1.0 - coverage)
    return float(candidates[allowed[0]]) if allowed.size else None


@dataclass(frozen=True)
class SelectionBound:
    """An acceptance threshold with a bound on the bad cases among those it accepts (Learn then Test).

    Attributes:
        delta: the bound on the share of bad cases among the accepted ones.
        epsilon: the probability (over the calibration draw) that the bound fails.
        accept_from: cases whose score is at least this are accepted without review.
        calibration_cases: the cases it was fitted on.
        accepted: how many of them it accepts.
        bad_accepted: how many of those are bad.
        p_value: the binomial p-value of "the share is above delta" at ``accept_from``.
    """

    delta: float
    epsilon: float
    accept_from: float
    calibration_cases: int
    accepted: int
    bad_accepted: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SelectionBound:
        return cls(**data)


def bound_accepted_risk(
    scores: np.ndarray,
    bad: np.ndarray,
    candidates: np.ndarray,
    delta: float,
    epsilon: float,
    at_least: float = -np.inf,
) -> SelectionBound | None:
    """The lowest acceptance threshold from ``at_least`` on whose share of bad cases among the
    accepted is shown to be at most ``delta``.

    Every candidate ``t`` is the null hypothesis "among cases with ``score >= t`` the share of bad
    ones is above ``delta``", tested with the exact binomial tail of the accepted calibration cases
    at level ``epsilon / len(candidates)`` (Bonferroni). With probability at least ``1 - epsilon``
    no true null is rejected: every rejected candidate keeps the bound at once, so whichever of
    them is returned, however ``at_least`` was chosen, keeps it too.

    Args:
        scores: ``(n,)`` per calibration case, higher = better (e.g. the estimated Dice, estimated
            for each case by a predictor that did not see it).
        bad: ``(n,)`` bool, the case is bad (e.g. its Dice is below 0.7).
        candidates: ``(m,)`` the acceptance thresholds, fixed before the data are seen.
        delta: in (0, 1).
        epsilon: in (0, 1).
        at_least: the lowest threshold wanted (e.g. one chosen to find the bad cases), not a candidate.

    Returns:
        The :class:`SelectionBound`, or None when no candidate from ``at_least`` on is shown to keep the bound.
    """
    scores, bad = np.asarray(scores, np.float64), np.asarray(bad, bool)
    candidates = np.sort(np.asarray(candidates, np.float64))
    if scores.ndim != 1 or scores.shape != bad.shape or candidates.ndim != 1 or candidates.size == 0:
        raise SegUncertaintyError("scores and bad must be one value per case, and there must be candidates")
    if not (0 < delta < 1 and 0 < epsilon < 1):
        raise SegUncertaintyError(f"delta and epsilon must lie in (0, 1), got {delta:g} and {epsilon:g}")
    level = epsilon / candidates.size
    for t in candidates[candidates >= at_least]:  # the lowest first: the first shown to keep the bound accepts the most
        accepted = scores >= t
        count, bad_count = int(accepted.sum()), int((bad & accepted).sum())
        p = float(stats.binom.cdf(bad_count, count, delta)) if count else 1.0
        if p <= level:
            return SelectionBound(float(delta), float(epsilon), float(t), int(scores.size), count, bad_count, p)
    return None
