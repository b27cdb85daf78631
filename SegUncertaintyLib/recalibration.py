"""The calibration baselines the field uses, beside the head's tempering: temperature scaling and
vector scaling of the backbone's probabilities (:class:`.calibration.LogitScaling`).

Both are fitted once, by maximum likelihood, on the roi voxels (within ``margin_mm`` of the
backbone's segmentation or any rater's outline, as ``evaluate`` scores them) of the head-calibration
split, which the backbone never saw, against the raters' majority; the card keeps them
(``recalibration``). As uncertainty methods (``temperature``, ``vector-scaling``) they run from the
one plain backbone pass and give its recalibrated probabilities, their segmentation (the argmax:
temperature scaling keeps the backbone's, vector scaling's biases can move the boundary) and the
``max_softmax`` and ``entropy`` maps of the recalibrated probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .calibration import LogitScaling
from .data.cases import Case
from .errors import ModelError
from .metrics import region_around
from .model.card import RecalibrationSection
from .model.package import ModelPackage
from .prediction import Prediction
from .progress import Progress
from .uncertainty import max_softmax_uncertainty, predictive_entropy
from .volume import Volume

RECALIBRATION_METHODS = {"temperature": "temperature", "vector-scaling": "vector"}  # method -> card entry
FIT_COMMAND = "seguncertainty fit-recalibration --model MODEL"


def scaling_of(package: ModelPackage, method: str) -> LogitScaling:
    """The fitted scaling of a recalibration method.

    Raises:
        ModelError: the package has none fitted, or ``method`` is not a recalibration method.
    """
    if method not in RECALIBRATION_METHODS:
        raise ModelError(f"{method!r} is not a recalibration method ({', '.join(RECALIBRATION_METHODS)})")
    section = package.card.recalibration
    if section is None:
        raise ModelError(
            f"model {package.card.name!r} has no fitted {method}; fit it on labelled held-out cases with {FIT_COMMAND}"
        )
    return LogitScaling.from_dict(getattr(section, RECALIBRATION_METHODS[method]))


def recalibrate(prediction: Prediction, scaling: LogitScaling) -> Prediction:
    """``prediction`` with its probabilities recalibrated (``calibrated_probabilities``), their argmax as
    its labels, and their ``max_softmax`` and ``entropy`` maps, each ``(k, j, i)`` on its grid."""
    calibrated = scaling.apply(prediction.probabilities)
    maps = {
        "max_softmax": max_softmax_uncertainty(calibrated).astype(np.float32),
        "entropy": predictive_entropy(calibrated).astype(np.float32),
    }
    labels = calibrated.argmax(axis=0).astype(np.uint8)
    return replace(prediction, labels=labels, calibrated_probabilities=calibrated).with_maps(maps)


def fit_recalibration(
    cases: Sequence[Case],
    predict: Callable[[Volume], Prediction],
    margin_mm: float = 3.0,
    progress: Progress | None = None,
) -> RecalibrationSection:
    """Fit temperature and vector scaling on the roi voxels of labelled held-out ``cases``.

    Args:
        cases: labelled cases the backbone never saw (with their raters).
        predict: volume -> the backbone's plain :class:`.prediction.Prediction` (e.g. a Predictor's
            ``predict(volume, "none")``).
        margin_mm: the roi margin, as ``evaluate``'s.
        progress: receives stage ``"calibration"`` after every case.

    Returns:
        The card's ``recalibration`` section (``training`` gives the cases and voxels).
    """
    if not cases:
        raise ModelError("fitting the recalibration needs labelled cases")
    report = progress or Progress()
    probabilities, labels = [], []
    for n, case in enumerate(cases):
        prediction = predict(case.volume)
        majority = np.asarray(case.majority)
        masks = np.concatenate([prediction.labels[None] > 0, case.raters > 0])
        roi = region_around(masks, margin_mm, case.geometry.spacing)
        probabilities.append(prediction.probabilities[:, roi])
        labels.append(majority[roi])
        report("calibration", (n + 1) / len(cases), case.case_id)
    pooled, reference = np.concatenate(probabilities, axis=1), np.concatenate(labels)
    return RecalibrationSection(
        temperature=LogitScaling.fit(pooled, reference, per_class=False).to_dict(),
        vector=LogitScaling.fit(pooled, reference, per_class=True).to_dict(),
        training={
            "cases": len(cases),
            "voxels": int(reference.size),
            "voxel_set": f"roi: within {margin_mm:g} mm of the backbone's segmentation or any rater's outline",
            "reference": "the raters' majority vote",
            "objective": "negative log-likelihood (L-BFGS)",
        },
    )
