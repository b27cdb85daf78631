"""A case's estimated quality at predict time: what ``summary.json`` says under ``quality``."""

from __future__ import annotations

import numpy as np

from ..model.package import ModelPackage
from ..predict_folder import QualityEstimate
from ..prediction import Prediction
from ..preprocess import normalize_intensities
from ..volume import Volume
from .features import case_features
from .package import load_quality
from .predictor import LinearQuality, QualityNet, net_input, predict_net
from .volume import VolumeEvidence


def estimate_quality(
    volume: Volume,
    prediction: Prediction,
    package: ModelPackage,
    predictors: tuple[LinearQuality, QualityNet, float] | None = None,
    normalised: np.ndarray | None = None,
) -> QualityEstimate:
    """Estimated Dice (both predictors), the volume forecast and the features, for a prediction made with the head.

    Args:
        volume: the input image (raw intensities) on the prediction's grid.
        prediction: the head's prediction (its maps give the features).
        package: a package with quality predictors (see :func:`.package.has_quality`).
        predictors: those predictors, already loaded (:func:`.package.load_quality`); loaded here if None.
        normalised: the volume's ``(k, j, i)`` intensities normalised for the package, when already made.

    Returns:
        ``estimated_dice`` (linear predictor) and ``estimated_dice_net`` in [0, 1]; ``needs_review``
        (the linear estimate is below the card's ``review_below``, chosen on the calibration split
        to find the cases with Dice below ``bad_dice``, with ``review_bound`` when it is the
        triage bound); ``volume_forecast_ml`` of the foreground (mean, sd, 90 % interval, mL, and
        the conformal 90 % interval when the package has its scale); ``features`` (what
        ``summary.json`` holds under ``quality``).
    """
    from ..prediction import best_probabilities, risk_map

    linear, net, scale = predictors or load_quality(package)
    features = case_features(prediction, prediction.maps.get("fragile"))
    foreground = 1.0 - best_probabilities(prediction)[0]
    image = normalize_intensities(volume.array, package.card.normalization) if normalised is None else normalised
    x = net_input(image, prediction.probabilities[0], risk_map(prediction)[1], prediction.labels)
    evidence = VolumeEvidence.from_probability(foreground, volume.geometry.voxel_volume_ml)
    forecast = evidence.forecast(scale)
    estimated = float(linear.predict([features])[0])
    section, guarantees = package.card.quality, package.card.guarantees
    bad, review_below = section.bad_dice, section.review_below
    forecast_ml = {
        "mean": round(forecast.mean_ml, 4),
        "sd": round(forecast.sd_ml, 4),
        "interval_90": [round(v, 4) for v in forecast.interval(0.9)],
    }
    review_bound = None
    if guarantees is not None:
        if guarantees.volume_scale_90 is not None:
            forecast_ml["interval_90_conformal"] = [
                round(v, 4) for v in evidence.conformal_interval(guarantees.volume_scale_90)
            ]
        triage = guarantees.triage
        if triage is not None and triage["accept_from"] == review_below:
            review_bound = {k: triage[k] for k in ("delta", "epsilon", "calibration_cases")}
    return QualityEstimate(
        estimated_dice=round(estimated, 4),
        estimated_dice_net=round(float(predict_net(net, x[None])[0]), 4),
        needs_review=estimated < review_below,
        review_below=review_below,
        bad_dice=bad,
        volume_forecast_ml=forecast_ml,
        features={k: float(np.round(v, 6)) for k, v in features.items()},
        review_bound=review_bound,
    )
