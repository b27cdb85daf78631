"""Fit the quality predictors on the head-calibration split, score them on the test split, bundle them.

The Dice targets come from cases the backbone never trained on (the calibration split), against the
raters' majority vote. ``seguncertainty train-quality`` runs :func:`train_quality`; the benchmark
(``benchmarks/quality_prediction.py``) calls :func:`collect_records` and the same fitting functions.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..conformal import RiskCurve, SelectionBound, bound_accepted_risk
from ..data.cases import Case
from ..data.datasets import load_dataset_cases
from ..errors import ModelError
from ..guarantees import DEFAULT_ALPHA, RISK_THRESHOLDS, case_losses, conformal_half, fit_guarantees, volume_scores
from ..metrics import auroc, dice
from ..model.backbones import write_weights
from ..model.card import GuaranteeSection, QualitySection
from ..model.package import ModelPackage, load_package, write_card
from ..prediction import Prediction, best_probabilities, risk_map
from ..predictor import Predictor
from ..preprocess import normalize_intensities
from ..progress import Progress
from ..segwithu.package import has_head
from .features import case_features
from .package import NET_FILE
from .predictor import fit_linear, fit_net, net_input, predict_net
from .volume import VolumeEvidence, coverage, fit_scale, mean_crps, share_inside

BAD_DICE = 0.7  # a case below this Dice "needs a human" in the AUROC of the worst cases


@dataclass
class CaseRecord:
    """One case as the quality predictors see it, with its truth.

    Attributes:
        features: :func:`case_features` of the head's prediction (plus extra sources when collected).
        dice: Dice of the segmentation against the raters' majority vote.
        volume: the prediction's volume evidence for the (any-)foreground class.
        rater_volumes_ml: each rater's foreground volume, mL.
        net_input: ``(3, *NET_SHAPE)`` input of the quality network.
        missed_errors, missed_structure: ``(T,)`` the case's loss curves for the guarantees
            (:func:`..guarantees.case_losses`).
    """

    case_id: str
    patient_id: str
    features: dict[str, float]
    dice: float
    volume: VolumeEvidence
    rater_volumes_ml: list[float]
    net_input: torch.Tensor = field(repr=False)
    missed_errors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    missed_structure: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def record_of(
    case: Case,
    prediction: Prediction,
    package: ModelPackage,
    fragile: np.ndarray | None = None,
    normalised: np.ndarray | None = None,
) -> CaseRecord:
    """The record of one labelled case predicted with the head (``fragile``: the search's mask, if it ran;
    ``normalised``: the case's image normalised for the package, when already made)."""
    foreground = 1.0 - best_probabilities(prediction)[0]
    voxel_ml = case.geometry.voxel_volume_ml
    image = normalize_intensities(case.image, package.card.normalization) if normalised is None else normalised
    missed_errors, missed_structure = case_losses(prediction, case.majority)
    return CaseRecord(
        case_id=case.case_id,
        patient_id=case.patient_id,
        features=case_features(prediction, fragile),
        dice=dice(prediction.labels > 0, case.majority > 0),
        volume=VolumeEvidence.from_probability(foreground, voxel_ml),
        rater_volumes_ml=[float(np.count_nonzero(r)) * voxel_ml for r in case.raters],
        net_input=net_input(image, prediction.probabilities[0], risk_map(prediction)[1], prediction.labels),
        missed_errors=missed_errors,
        missed_structure=missed_structure,
    )


def collect_records(
    cases: Sequence[Case],
    package: ModelPackage,
    device: str = "auto",
    sources: Sequence[str] = (),
    progress: Progress | None = None,
    stage: str = "collect",
) -> list[CaseRecord]:
    """Predict every case with the head (one pass) and keep its record.

    Args:
        cases: labelled cases.
        package: a model package with a head.
        device: ``auto``, ``cpu`` or ``cuda``.
        sources: extra uncertainty sources whose band means join the features: ``"ensemble"``
            (``mutual_information:band_mean`` of the deep ensemble) and ``"fragility"`` (the search's
            ``fragile_fraction`` and ``flip_mass`` means; the package needs a replay set).
        progress: receives ``stage`` after every case.
    """
    if not has_head(package):
        raise ModelError(f"model {package.card.name!r} has no head; the quality predictors read its maps")
    predictor = Predictor(package, device)
    records = []
    for n, case in enumerate(cases):
        volume = case.volume
        prediction = predictor.predict(volume, "segwithu")
        fragile = None
        if "ensemble" in sources:  # the ensemble's map joins the head's, read on the head's outline band
            prediction = prediction.with_maps(
                {"mutual_information": predictor.predict(volume, "ensemble").maps["mutual_information"]}
            )
        if "fragility" in sources:
            found = predictor.search(volume, prediction)
            fragile = found.maps["fragile"] > 0
            prediction = prediction.with_maps({"flip_mass": found.maps["flip_mass"]})
        record = record_of(case, prediction, package, fragile, predictor.normalised(volume))
        records.append(record)
        if progress is not None:
            progress(stage, (n + 1) / len(cases), case.case_id)
    return records


def prediction_scores(predicted: np.ndarray, true: np.ndarray, bad: float = BAD_DICE) -> dict[str, float]:
    """How well predicted Dice matches true Dice: R^2, Pearson r, Spearman rho, MAE, and the AUROC of
    ``1 - predicted`` for finding the cases with ``true < bad`` (NaN when every case is on one side)."""
    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    residual = float(((true - predicted) ** 2).sum())
    spread = float(((true - true.mean()) ** 2).sum())
    return {
        "r2": 1.0 - residual / spread if spread > 0 else float("nan"),
        "pearson": float(stats.pearsonr(predicted, true)[0]),
        "spearman": float(stats.spearmanr(predicted, true)[0]),
        "mae": float(np.abs(predicted - true).mean()),
        "auroc_bad": auroc(1.0 - predicted, true < bad),
    }


def score_scores(score: np.ndarray, true: np.ndarray, bad: float = BAD_DICE) -> dict[str, float]:
    """How well a per-case uncertainty score (higher = worse) ranks cases: Spearman rho with Dice
    (negative is good) and the AUROC for finding the cases with ``true < bad``."""
    return {
        "spearman": float(stats.spearmanr(score, true)[0]),
        "auroc_bad": auroc(np.asarray(score), np.asarray(true) < bad),
    }


def cross_validated_estimates(rows: Sequence[dict[str, float]], dice: np.ndarray, alpha: float) -> np.ndarray:
    """Each calibration case's Dice estimated by a ridge fitted without it (5 folds, or one per case
    below five cases), in [0, 1].

    What the thresholds on the estimate are chosen on: the bundled ridge, fitted on every one of
    these cases, would estimate them too well.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .predictor import LINEAR_FEATURES, feature_matrix

    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    folds = KFold(min(5, len(dice)), shuffle=True, random_state=0)
    return np.clip(cross_val_predict(model, feature_matrix(rows, LINEAR_FEATURES), dice, cv=folds), 0.0, 1.0)


def review_threshold(estimated: np.ndarray, dice: np.ndarray, bad: float = BAD_DICE) -> float:
    """The estimated Dice below which a case is flagged for review, when no bound can be fitted.

    A ridge estimate shrinks towards the mean Dice, so flagging below ``bad`` itself would flag
    almost nothing. The threshold maximises Youden's J (sensitivity + specificity - 1) for finding
    the cases with ``dice < bad`` among the cross-validated ``estimated`` Dice of the calibration
    cases (:func:`cross_validated_estimates`); ``bad`` when the split has no such case.
    """
    positive = np.asarray(dice) < bad
    if not positive.any() or positive.all() or len(dice) < 5:
        return bad
    candidates = np.unique(estimated)
    youden = [(estimated[positive] < t).mean() - (estimated[~positive] < t).mean() for t in candidates]
    best = int(np.argmax(youden))
    # halfway to the next estimate: the flagged set is the same, the threshold less tied to one case
    upper = candidates[best + 1] if best + 1 < len(candidates) else candidates[best]
    return float(0.5 * (candidates[best] + upper))


def triage_rule(
    estimated: np.ndarray, dice: np.ndarray, delta: float = 0.05, epsilon: float = 0.1, bad: float = BAD_DICE
) -> tuple[float, SelectionBound | None]:
    """The estimated Dice below which a case is flagged for review, and the bound it keeps.

    Learn then Test on the calibration cases' cross-validated ``estimated`` Dice, candidates every
    0.01 from ``bad`` to 0.99 (:func:`..conformal.bound_accepted_risk`): the lowest candidate at or
    above :func:`review_threshold` (which is chosen to find the bad cases) shown to accept at most
    ``delta`` cases below ``bad`` Dice, with probability at least ``1 - epsilon``. Where none is
    shown, :func:`review_threshold` alone, without a bound.

    Returns:
        ``(review_below, bound or None)``.
    """
    youden = review_threshold(estimated, dice, bad)
    candidates = np.round(np.arange(bad, 1.0 - 1e-9, 0.01), 2)
    bound = bound_accepted_risk(estimated, np.asarray(dice) < bad, candidates, delta, epsilon, at_least=youden)
    return (youden, None) if bound is None else (bound.accept_from, bound)


def flag_scores(flagged: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    """Sensitivity (bad cases flagged), specificity (good cases not flagged) and the share flagged."""
    flagged, bad = np.asarray(flagged, bool), np.asarray(bad, bool)
    return {
        "sensitivity": float(flagged[bad].mean()) if bad.any() else float("nan"),
        "specificity": float((~flagged[~bad]).mean()) if (~bad).any() else float("nan"),
        "flagged": float(flagged.mean()),
    }


def rank_aggregate(columns: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over scores of each case's rank within its set, in [0, 1] (higher = worse)."""
    ranks = [stats.rankdata(c) / len(c) for c in columns]
    return np.mean(ranks, axis=0)


def train_quality(
    model: str | Path,
    cache_dir: Path | None = None,
    device: str = "auto",
    data: str = "lidc",
    net_epochs: int = 150,
    seed: int = 0,
    command: str = "",
    progress: Progress | None = None,
) -> dict:
    """Fit both Dice predictors and the volume spread on the calibration split, score them on the test
    split, and add them to the package (card section ``quality``, weights ``quality_net.safetensors``);
    fit the guarantees (card section ``guarantees``, see :mod:`..guarantees`): the triage bound on
    the calibration split's cross-validated estimates, the others on the test split's
    :func:`..guarantees.conformal_half` (cases neither the backbone nor the head learnt from),
    realised on its other half.

    Returns:
        The card's new ``quality`` section.
    """
    report = progress or Progress()
    package = load_package(model)
    started = time.perf_counter()
    calibration = collect_records(
        load_dataset_cases(data, "calibration", cache_dir), package, device, (), report, "calibration"
    )
    test = collect_records(load_dataset_cases(data, "test", cache_dir), package, device, (), report, "test")
    report("fit", 0.0)
    linear = fit_linear([r.features for r in calibration], np.array([r.dice for r in calibration]))
    inputs, targets = torch.stack([r.net_input for r in calibration]), np.array([r.dice for r in calibration])
    net = fit_net(inputs, targets, net_epochs, seed, progress=lambda f: report("fit", 0.05 + 0.9 * f, "network"))
    scale = fit_scale([r.volume for r in calibration], [r.rater_volumes_ml for r in calibration])
    held_out = cross_validated_estimates([r.features for r in calibration], targets, linear.alpha)
    review_below, bound = triage_rule(held_out, targets)
    report("fit", 1.0)
    true = np.array([r.dice for r in test])
    estimated = linear.predict([r.features for r in test])
    forecasts = [r.volume.forecast(scale) for r in test]
    package.card.files[NET_FILE] = write_weights(net, package.file(NET_FILE))
    package.card.guarantees = fit_card_guarantees(test, estimated, bound, data, len(calibration), command)
    section = {
        "linear": linear.to_dict(),
        "net": {"file": NET_FILE},
        "volume_scale": scale,
        "bad_dice": BAD_DICE,
        "review_below": round(review_below, 4),
        "training": {
            "command": command,
            "data": {"dataset": data, "split": "calibration", "cases": len(calibration)},
            "net_epochs": net_epochs,
            "seed": seed,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        },
        "test": {
            "split": "test",
            "cases": len(test),
            "linear": _rounded(prediction_scores(estimated, true)),
            "review_flag": _rounded(flag_scores(estimated < review_below, true < BAD_DICE)),
            "net": _rounded(prediction_scores(predict_net(net, torch.stack([r.net_input for r in test])), true)),
            "volume_crps_ml": round(mean_crps(forecasts, [r.rater_volumes_ml for r in test]), 4),
            "volume_coverage_90": round(coverage(forecasts, [r.rater_volumes_ml for r in test]), 4),
        },
    }
    package.card.quality = QualitySection.from_dict(section)
    write_card(package.card, package.path)
    return section


def fit_card_guarantees(
    test: Sequence[CaseRecord],
    estimated: np.ndarray,
    triage: SelectionBound | None,
    data: str,
    calibration_cases: int,
    command: str = "",
) -> GuaranteeSection | None:
    """The card's ``guarantees``: fitted on the test cases of :func:`..guarantees.conformal_half`,
    realised on the others (``estimated``: ``(n,)`` the test cases' estimated Dice); None when the
    test split has a single patient, which leaves no half to fit on.

    The head learnt from the calibration cases: its maps there are in-sample, and a guarantee
    fitted on them fails on new cases, so the test split's patients are split in two halves instead.
    """
    fit_half = conformal_half([r.patient_id for r in test])
    fitted = [r for r, f in zip(test, fit_half, strict=True) if f]
    if not fitted:
        return None
    section = fit_guarantees(
        np.stack([r.missed_errors for r in fitted]),
        np.stack([r.missed_structure for r in fitted]),
        [volume_scores(r.volume, r.rater_volumes_ml) for r in fitted],
        "error_probability",
        triage=triage.to_dict() if triage is not None else None,
        training={
            "command": command,
            "data": {"dataset": data, "split": "test", "half": "conformal_half", "cases": len(fitted)},
            "triage_data": {
                "dataset": data,
                "split": "calibration",
                "cases": calibration_cases,
                "estimates": "5-fold cross-validated",
            },
        },
    )
    section.test = realised_guarantees(
        section, [r for r, f in zip(test, fit_half, strict=True) if not f], estimated[~fit_half]
    )
    return section


def realised_guarantees(
    section: GuaranteeSection, test: Sequence[CaseRecord], estimated: np.ndarray, alpha: float = DEFAULT_ALPHA
) -> dict[str, Any]:
    """What the guarantees of ``section`` gave on labelled test cases (``estimated``: their estimated Dice):
    the mean missed share of the errors and of the structure at ``alpha``, the volume interval's
    coverage of the raters' volumes, and the share of bad cases among those the triage accepts."""
    figures: dict[str, Any] = {"split": "test", "half": "the other half", "cases": len(test), "alpha": alpha}
    for name, curves in (
        ("review", [r.missed_errors for r in test]),
        ("structure", [r.missed_structure for r in test]),
    ):
        control = RiskCurve.from_dict(getattr(section, name)).control(alpha)
        if control is not None:
            j = RISK_THRESHOLDS.tolist().index(control.threshold)
            figures[f"{name}_threshold"] = control.threshold
            figures[f"{name}_missed"] = round(float(np.mean([c[j] for c in curves])), 4)
    if section.volume_scale_90 is not None:
        intervals = [r.volume.conformal_interval(section.volume_scale_90) for r in test]
        figures["volume_coverage_90"] = round(share_inside(intervals, [r.rater_volumes_ml for r in test]), 4)
    if section.triage is not None:
        accepted = estimated >= section.triage["accept_from"]
        bad = np.array([r.dice for r in test]) < BAD_DICE
        figures["triage_sent_to_review"] = round(float((~accepted).mean()), 4)
        figures["triage_bad_among_accepted"] = round(float(bad[accepted].mean()), 4) if accepted.any() else None
    return figures


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    """Four significant digits; NaN (undefined, e.g. no bad case) as None, which JSON can hold."""
    return {k: None if np.isnan(v) else float(f"{v:.4g}") for k, v in values.items()}
