"""Guarantees a reviewer can rely on: fitted once on calibration cases, stated for every prediction.

Three distribution-free statements (see :mod:`.conformal`), each for a new case exchangeable with
the calibration cases (the same kind of scan, from patients none of whom the backbone or the
calibration shares):

* **review**: reviewing every region of the prediction drawn at the guaranteed threshold leaves, on
  average, at most ``alpha`` of the segmentation's wrong voxels outside the reviewed regions.
  Regions keep every high-risk voxel (``min_voxels = 1``), so the reviewed voxels are exactly
  those whose estimated probability of error reaches the threshold, plus the fragile voxels when
  the search ran; the curve is fitted without the search, so fragile voxels only review more.
* **structure**: the outline ``p_foreground >= threshold`` misses, on average, at most ``alpha``
  of the structure (control of the foreground's false-negative rate).
* **volume**: the conformal interval ``mean +- q * width`` of the foreground volume holds on average
  at least 90 % of the raters' volumes (the Gaussian interval, fitted for CRPS, is kept beside it).

The calibration cases must be new to every fitted part that makes the score: the head's maps on
its own training cases are in-sample, and a review guarantee fitted there left 12.9 % of the errors
unreviewed at alpha = 0.1 on the test split (BENCHMARKS.md). ``train-quality`` fits these three on
one half of the test split's patients (:func:`conformal_half`) and measures them on the other.
The triage bound on the estimated Dice (:func:`.conformal.bound_accepted_risk`) is fitted with the
quality predictors (:mod:`.quality.training`) on their cross-validated estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .conformal import RiskCurve, conformal_scale, share_below
from .errors import InputError
from .model.card import GuaranteeSection, ModelPackage
from .prediction import Prediction, best_probabilities, risk_map
from .quality.volume import VolumeEvidence
from .review.regions import DEFAULT_THRESHOLD

RISK_THRESHOLDS = np.geomspace(1e-3, 1.0, 121)  # candidate thresholds on a probability scale
DEFAULT_ALPHA = 0.1
VOLUME_COVERAGE = 0.9


@dataclass(frozen=True)
class ReviewSettings:
    """How a prediction's review regions are drawn.

    Attributes:
        threshold: the estimated probability of error from which voxels form regions; None: the
            threshold the package guarantees for ``alpha`` (:data:`.review.regions.DEFAULT_THRESHOLD`
            where it has none).
        alpha: the share of the segmentation's wrong voxels that may stay outside the regions, on average.
    """

    threshold: float | None = None
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InputError(f"the share of errors left unreviewed (alpha) must lie in (0, 1), got {self.alpha:g}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise InputError(f"the region threshold must lie in [0, 1], got {self.threshold:g}")

    def resolve(self, package: ModelPackage, prediction: Prediction) -> float:
        """The threshold to draw ``prediction``'s regions at."""
        if self.threshold is not None:
            return self.threshold
        guaranteed, _ = review_threshold(package, risk_map(prediction)[0], self.alpha)
        return DEFAULT_THRESHOLD if guaranteed is None else guaranteed


def case_losses(prediction: Prediction, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One labelled case's loss curves at :data:`RISK_THRESHOLDS`.

    Args:
        prediction: the prediction (its ``risk_map`` draws the regions).
        reference: ``(k, j, i)`` reference label map on the prediction's grid (e.g. the raters' majority).

    Returns:
        ``(missed_errors, missed_structure)``, each ``(T,)`` in [0, 1]: the share of the wrong
        voxels whose estimated probability of error is below each threshold (left unreviewed), and
        the share of the reference's foreground whose foreground probability is below it.
    """
    _, risk = risk_map(prediction)
    foreground = 1.0 - best_probabilities(prediction)[0]
    return (
        share_below(risk, prediction.labels != reference, RISK_THRESHOLDS),
        share_below(foreground, reference > 0, RISK_THRESHOLDS),
    )


def conformal_half(patients: Sequence[str], seed: int = 0) -> np.ndarray:
    """``(n,)`` bool: the cases whose patient falls in the half of the patients the guarantees are
    fitted on (the same half for the same patients, whatever their order); the rest measure them."""
    names = sorted(set(patients))
    chosen = set(np.asarray(names)[np.random.default_rng(seed).permutation(len(names))[: len(names) // 2]])
    return np.array([p in chosen for p in patients], bool)


def volume_scores(evidence: VolumeEvidence, observed_ml: Sequence[float]) -> np.ndarray:
    """``|observed - mean| / width`` for each observed volume (e.g. each rater's), the conformal scores."""
    return np.abs(np.asarray(observed_ml, np.float64) - evidence.mean_ml) / evidence.width_ml


def fit_guarantees(
    missed_errors: np.ndarray,
    missed_structure: np.ndarray,
    volume: Sequence[np.ndarray],
    risk_map_name: str,
    triage: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> GuaranteeSection:
    """The card's ``guarantees`` section from calibration cases.

    Args:
        missed_errors: ``(n, T)`` the cases' first curve of :func:`case_losses`.
        missed_structure: ``(n, T)`` their second.
        volume: per case, :func:`volume_scores` of its raters' volumes (the same count for every case).
        risk_map_name: the map the regions were drawn from (``error_probability`` for the head).
        triage: the fitted :class:`.conformal.SelectionBound` as a dict, if any.
        training: how they were fitted (data, command), kept in the card.
    """
    scale = conformal_scale(np.stack(volume), VOLUME_COVERAGE)
    return GuaranteeSection(
        review=RiskCurve.fit(missed_errors, RISK_THRESHOLDS).to_dict(),
        structure=RiskCurve.fit(missed_structure, RISK_THRESHOLDS).to_dict(),
        risk_map=risk_map_name,
        volume_scale_90=None if scale is None else round(scale, 4),
        triage=triage,
        training=training or {},
    )


def review_threshold(package: ModelPackage, risk_map_name: str, alpha: float) -> tuple[float | None, str]:
    """The guaranteed region threshold for ``alpha``, or None and why there is none.

    Args:
        package: the model package (its card's ``guarantees``).
        risk_map_name: the map this prediction's regions are drawn from.
        alpha: the share of the wrong voxels that may stay unreviewed, in (0, 1).
    """
    section = package.card.guarantees
    if section is None:
        return None, f"model {package.card.name!r} has no calibration set for a guarantee"
    if section.risk_map != risk_map_name:
        return None, f"the guarantee holds for regions drawn from {section.risk_map}, not from {risk_map_name}"
    control = RiskCurve.from_dict(section.review).control(alpha)
    if control is None:
        cases = section.review["cases"]
        return None, f"{cases} calibration cases cannot guarantee alpha = {alpha:g}"
    return control.threshold, ""


def guarantee_record(
    package: ModelPackage, prediction: Prediction, alpha: float, threshold: float, regions: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """What ``summary.json`` says under ``guarantees`` for one prediction.

    ``review``: alpha, the guaranteed threshold, the calibration cases and the workload (regions,
    mL), or ``available: false`` and the reason; ``structure``: the outline that misses at most
    alpha of the structure on average, its threshold and volume (mL), when the card has it and the
    prediction's probabilities are those it was fitted on (the method whose map is ``risk_map``:
    the head's calibrated probabilities, not another method's).
    """
    source, _ = risk_map(prediction)
    guaranteed, reason = review_threshold(package, source, alpha)
    section = package.card.guarantees
    if guaranteed is None or guaranteed != threshold:
        reason = reason or f"the regions were drawn at {threshold:g}, not at the guaranteed {guaranteed:g}"
        review: dict[str, Any] = {"available": False, "alpha": alpha, "reason": reason}
    else:
        review = {
            "available": True,
            "alpha": alpha,
            "threshold": round(threshold, 6),
            "calibration_cases": section.review["cases"],
            "regions": len(regions),
            "volume_ml": round(sum(r["volume_ml"] for r in regions), 4),
        }
    record: dict[str, Any] = {"review": review}
    fitted_here = section is not None and section.risk_map == source
    control = RiskCurve.from_dict(section.structure).control(alpha) if fitted_here else None
    if control is not None:
        foreground = 1.0 - best_probabilities(prediction)[0]
        voxels = int(np.count_nonzero(foreground >= control.threshold))
        record["structure"] = {
            "alpha": alpha,
            "threshold": round(control.threshold, 6),
            "calibration_cases": control.calibration_cases,
            "volume_ml": round(voxels * prediction.geometry.voxel_volume_ml, 4),
        }
    return record


def review_sentence(review: dict[str, Any], pending: Sequence[Any] | None = None) -> str:
    """The review guarantee in words, for the report and Slicer.

    Args:
        review: ``review`` of :func:`guarantee_record`.
        pending: the regions still to review, as the reviewer works through them (anything with a
            ``volume_ml``, e.g. :class:`.review.regions.Region`); None: all of them, before any review.
    """
    if not review.get("available"):
        return f"No review guarantee: {review.get('reason', 'none was fitted')}."
    source = f"guarantee from {review['calibration_cases']} calibration cases"
    if pending is not None and not pending:
        return (
            f"Every flagged region is reviewed: on average at most {review['alpha']:.0%} of the errors are left "
            f"unreviewed ({source})."
        )
    count = review["regions"] if pending is None else len(pending)
    volume_ml = review["volume_ml"] if pending is None else sum(r.volume_ml for r in pending)
    which = "" if pending is None or count == review["regions"] else "remaining "
    regions = f"{'this' if count == 1 else 'these'} {which}{count} region{'' if count == 1 else 's'}"
    return (
        f"Review {regions} ({volume_ml:.2f} mL) to leave at most {review['alpha']:.0%} of the errors "
        f"unreviewed (on average; {source})."
    )
