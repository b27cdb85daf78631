"""Run uncertainty methods over a data split and score them against the raters.

Reference and voxel sets, the same for every method:

* the reference label map is the raters' majority vote (:func:`..metrics.majority_vote`); a voxel
  is an error where a method's segmentation differs from it (each method is scored on its own
  segmentation: the mean of the samples for MC dropout, TTA and ensembles);
* ``all``: every voxel of the case; ``roi``: voxels within ``margin_mm`` of the method's
  segmentation or of any rater's outline. Every error lies in the roi; the margin adds the hard
  correct voxels along the boundaries, where ranking is hard.

The fragility search (``fragility``) is scored on the backbone's segmentation (it does not change it),
with the reference and each adversary's last admissible snapshot as its samples.

Per case, each method gets segmentation metrics (Dice vs majority, vs each rater, vs the
unanimous consensus; soft Dice vs the rater frequency), multi-rater metrics (GED^2 and
Hungarian-matched IoU of its samples against the raters, volume CRPS in mL) and calibration
metrics in the roi (top-label ECE with equal-width and with equal-mass bins, Brier, NLL of the
probabilities it reports: calibrated ones for the head and the recalibration baselines), and the
CURVAS challenge's ECE (top-label, 50 bins, every voxel of the case, background included, against
each rater, averaged) and volume CRPS (the soft volume against a Gaussian fitted to the raters'
volumes, see :func:`..metrics.curvas_volume_crps`). Each of its uncertainty maps ("scores") gets
error-detection AUROC and AUPRC (all and roi), and in the roi AURC, E-AURC, AUGRC and the NCC with
rater disagreement. Roi voxels are also pooled over cases for dataset-level figures and the plots.
Each map a method splits its uncertainty into (:data:`DECOMPOSITION`: epistemic, aleatoric, total)
is compared with the raters' variability map (:func:`..metrics.rater_variability`) as QUAM-SM does:
Pearson r, R^2 and soft Dice, over the whole volume and in the roi.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..baselines import check_available, single_pass_map
from ..cluster import ClusterSettings, WorkerDied, open_client, run_cases, worker_predictor
from ..data.cases import Case
from ..errors import SegUncertaintyError
from ..fragility.config import SearchConfig
from ..fragility.replay import load_replay
from ..methods import EVALUATION_METHODS, METHODS, SAMPLING_METHODS
from ..metrics import (
    CalibrationBins,
    aurc,
    auroc,
    average_precision,
    brier_score,
    consensus_dice,
    curvas_volume_crps,
    dice_per_class,
    e_aurc,
    generalized_energy_distance,
    hungarian_matched_iou,
    multirater_calibration_error,
    negative_log_likelihood,
    normalized_cross_correlation,
    rater_disagreement,
    rater_variability,
    region_around,
    soft_dice,
    variability_agreement,
    volume_crps,
)
from ..model.package import ModelPackage
from ..prediction import Prediction
from ..predictor import Predictor
from ..progress import Progress
from ..recalibration import RECALIBRATION_METHODS, recalibrate, scaling_of
from ..segwithu.package import has_head

# The uncertainty maps each method is scored by (higher = more likely wrong).
SCORES: dict[str, tuple[str, ...]] = {name: m.scores for name, m in METHODS.items()}
# The maps a method splits its uncertainty into (role -> map), compared with the raters' variability.
DECOMPOSITION: dict[str, dict[str, str]] = {name: m.decomposition for name, m in METHODS.items() if m.decomposition}
SINGLE_PASS = tuple(name for name, m in METHODS.items() if m.runs != "sampling")  # share one backbone pass per case


@dataclass
class PooledScores:
    """Roi voxels of every case, for one (method, score): the scores and whether each voxel is an error."""

    scores: list[np.ndarray] = field(default_factory=list)
    errors: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.scores), np.concatenate(self.errors)


@dataclass
class Evaluation:
    """Everything one evaluation run measured.

    Attributes:
        methods: the methods, in the order asked for.
        case_rows: one dict per (case, method): case metrics and ``<score>/<metric>`` entries.
        calibration: method -> pooled roi :class:`CalibrationBins` (top-label).
        confidence: method -> pooled roi top-label confidences (as ``scores``) and errors (for the
            equal-mass bins of the adaptive ECE, which need every voxel).
        pooled: ``(method, score)`` -> pooled roi scores and errors.
        seconds: method -> wall time summed over cases (a shared single pass counted for each).
        forward_passes: method -> whole-volume backbone passes per case.
        cases: number of cases.
        margin_mm: width of the roi margin.
    """

    methods: list[str]
    case_rows: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, CalibrationBins] = field(default_factory=dict)
    confidence: dict[str, PooledScores] = field(default_factory=dict)
    pooled: dict[tuple[str, str], PooledScores] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    forward_passes: dict[str, int] = field(default_factory=dict)
    cases: int = 0
    margin_mm: float = 3.0

    def add(self, case: CaseScores) -> None:
        """Fold one case's scores into the run's figures."""
        self.case_rows.extend(case.rows)
        for method, (confidence, correct) in case.calibration.items():
            self.calibration[method].add(confidence, correct)
            self.confidence[method].scores.append(confidence)
            self.confidence[method].errors.append(~correct)
        for key, (scores, errors) in case.pooled.items():
            self.pooled[key].scores.append(scores)
            self.pooled[key].errors.append(errors)
        for method, seconds in case.seconds.items():
            self.seconds[method] += seconds
        self.forward_passes.update(case.forward_passes)


def check_methods(methods: Sequence[str], package: ModelPackage, samples: int | None = None) -> list[str]:
    """Validate method names against the package (head, members, replay set) before anything slow starts."""
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise SegUncertaintyError("no methods given")
    for method in methods:
        if method not in SCORES:
            raise SegUncertaintyError(f"unknown method {method!r}; known: {', '.join(EVALUATION_METHODS)}")
        if method == "segwithu" and not has_head(package):
            raise SegUncertaintyError(f"model {package.card.name!r} has no uncertainty head to evaluate")
        if method in SAMPLING_METHODS:
            check_available(method, package, samples)
        if method == "fragility":
            load_replay(package)
        if method in RECALIBRATION_METHODS:
            scaling_of(package, method)
    return methods


def method_view(
    method: str, shared: Prediction, package: ModelPackage
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Segmentation, probabilities and maps of a single-pass method, from the one backbone (+ head)
    pass they share: ``(k, j, i)`` labels, ``(C, k, j, i)`` probabilities, ``(k, j, i)`` maps."""
    if method == "segwithu":
        return shared.labels, shared.calibrated_probabilities, shared.maps
    if method in RECALIBRATION_METHODS:
        recalibrated = recalibrate(shared, scaling_of(package, method))
        maps = {name: recalibrated.maps[name] for name in METHODS[method].maps}
        return recalibrated.labels, recalibrated.calibrated_probabilities, maps
    return shared.labels, shared.probabilities, single_pass_map(method, shared.probabilities)


def variability_metrics(
    maps: dict[str, np.ndarray], decomposition: dict[str, str], variability: np.ndarray, roi: np.ndarray
) -> dict[str, float]:
    """``<role>/<pcc|r2|sdice>_<all|roi>`` of each map of a decomposition against the raters' variability."""
    row = {}
    for role, name in decomposition.items():
        for where, mask in (("all", None), ("roi", roi)):
            values = maps[name] if mask is None else maps[name][mask]
            reference = variability if mask is None else variability[mask]
            for metric, value in variability_agreement(values, reference).items():
                row[f"{role}/{metric}_{where}"] = value
    return row


def score_case(
    case: Case,
    labels: np.ndarray,
    probabilities: np.ndarray,
    maps: dict[str, np.ndarray],
    samples: np.ndarray,
    score_names: Sequence[str],
    margin_mm: float,
    decomposition: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """The metrics of one method on one case.

    Args:
        case: the image's raters and grid.
        labels: ``(k, j, i)`` the method's segmentation.
        probabilities: ``(C, k, j, i)`` the probabilities it reports.
        maps: its uncertainty maps, each ``(k, j, i)``.
        samples: ``(S, k, j, i)`` its sampled segmentations (``labels[None]`` for a deterministic method).
        score_names: which maps to score.
        margin_mm: roi margin.
        decomposition: role -> map name of the maps to compare with the raters' variability.

    Returns:
        The row of metrics, ``score -> (roi scores, roi errors)``, and ``(roi confidence, roi correct)``.
    """
    num_classes = probabilities.shape[0]
    raters = np.asarray(case.raters).astype(np.uint8)
    majority = np.asarray(case.majority, np.uint8)
    errors = labels != majority
    roi = region_around(np.concatenate([labels[None] > 0, raters > 0]), margin_mm, case.geometry.spacing)
    voxel_ml = case.geometry.voxel_volume_ml
    foreground = range(1, num_classes)
    ged = generalized_energy_distance(samples, raters, num_classes)
    row: dict[str, Any] = {
        "dice_majority": float(np.mean(dice_per_class(labels, majority, num_classes))),
        "dice_raters": float(np.mean([np.mean(dice_per_class(labels, r, num_classes)) for r in raters])),
        "dice_consensus": float(np.mean([consensus_dice(labels, raters, c) for c in foreground])),
        "soft_dice": float(np.mean([soft_dice(probabilities[c], (raters == c).mean(axis=0)) for c in foreground])),
        "ged": ged["ged"],
        "sample_diversity": ged["sample_diversity"],
        "hm_iou": hungarian_matched_iou(samples, raters, num_classes),
        "volume_crps_ml": volume_crps(
            (samples > 0).reshape(len(samples), -1).sum(axis=1) * voxel_ml,
            (raters > 0).reshape(len(raters), -1).sum(axis=1) * voxel_ml,
        ),
        "roi_voxels": int(roi.sum()),
        "roi_error_rate": float(errors[roi].mean()) if roi.any() else float("nan"),
    }
    roi_probabilities = probabilities[:, roi]
    confidence, correct = roi_probabilities.max(axis=0), ~errors[roi]
    row["ece"] = CalibrationBins().add(confidence, correct).ece()
    row["curvas_ece"] = multirater_calibration_error(probabilities, raters)
    soft_volume_ml = float(probabilities[1:].sum()) * voxel_ml
    row["curvas_volume_crps_ml"] = curvas_volume_crps(
        soft_volume_ml, (raters > 0).reshape(len(raters), -1).sum(axis=1) * voxel_ml
    )
    row["brier"] = brier_score(roi_probabilities, majority[roi])
    row["nll"] = negative_log_likelihood(roi_probabilities, majority[roi])
    disagreement = rater_disagreement(raters)[roi]
    pooled = {}
    for name in score_names:
        score = maps[name]
        roi_score = score[roi]
        row[f"{name}/auroc_all"] = auroc(score, errors)
        row[f"{name}/auprc_all"] = average_precision(score, errors)
        row[f"{name}/auroc_roi"] = auroc(roi_score, errors[roi])
        row[f"{name}/auprc_roi"] = average_precision(roi_score, errors[roi])
        row[f"{name}/aurc_roi"] = aurc(roi_score, errors[roi])
        row[f"{name}/eaurc_roi"] = e_aurc(roi_score, errors[roi])
        row[f"{name}/ncc_roi"] = normalized_cross_correlation(roi_score, disagreement)
        pooled[name] = (roi_score.astype(np.float32), errors[roi])
    row.update(variability_metrics(maps, decomposition or {}, rater_variability(raters), roi))
    return row, pooled, (confidence.astype(np.float32), correct)


@dataclass
class CaseScores:
    """What scoring one case gave every method: :meth:`Evaluation.add` folds it into the run's figures.

    Attributes:
        rows: one dict per method (the case's row of :attr:`Evaluation.case_rows`).
        pooled: ``(method, score)`` -> the case's roi scores and errors.
        calibration: method -> the case's roi top-label confidence and whether each voxel is correct.
        seconds: method -> wall time on this case (a shared single pass counted for each).
        forward_passes: method -> whole-volume backbone passes.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    calibration: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    forward_passes: dict[str, int] = field(default_factory=dict)


def evaluate_case(predictor: Predictor, case: Case, methods: Sequence[str], margin_mm: float = 3.0) -> CaseScores:
    """Run every method on one case with ``predictor`` and score it (see the module docstring).

    The single-pass methods share one backbone (+ head) pass; the search runs on it.
    """
    single = [m for m in methods if m in SINGLE_PASS]
    volume = case.volume
    outputs: dict[str, tuple[Prediction, float]] = {}
    if single:
        start = time.perf_counter()
        shared = predictor.predict(volume, "segwithu" if "segwithu" in single else "none")
        for method in single:
            outputs[method] = (shared, time.perf_counter() - start)
        if "fragility" in single:
            start = time.perf_counter()
            found = predictor.search(volume, shared, keep_sample_labels=True)
            outputs["fragility"] = (found, outputs["fragility"][1] + time.perf_counter() - start)
    for method in (m for m in methods if m in SAMPLING_METHODS):
        start = time.perf_counter()
        outputs[method] = (predictor.predict(volume, method, keep_sample_labels=True), time.perf_counter() - start)
    result = CaseScores()
    for method in methods:
        prediction, seconds = outputs[method]
        if method == "fragility":
            maps, sampled, prediction = prediction.maps, prediction.sample_labels, shared
            labels, probabilities = shared.labels, shared.probabilities
        elif method in SINGLE_PASS:
            labels, probabilities, maps = method_view(method, prediction, predictor.package)
            sampled = labels[None]
        else:
            labels, probabilities, maps = prediction.labels, prediction.probabilities, prediction.maps
            sampled = prediction.sample_labels
        row, pooled, calibration = score_case(
            case, labels, probabilities, maps, sampled, SCORES[method], margin_mm, DECOMPOSITION.get(method)
        )
        result.rows.append({"case_id": case.case_id, "method": method, **row})
        result.pooled.update({(method, name): value for name, value in pooled.items()})
        result.calibration[method] = calibration
        result.seconds[method] = seconds
        result.forward_passes[method] = prediction.forward_passes
    return result


def _evaluate_on_worker(
    case: Case, methods: list[str], margin_mm: float, settings: tuple[str, str, SearchConfig | None, int | None]
) -> CaseScores:
    """:func:`evaluate_case` on a Dask worker, with that worker's one Predictor for ``settings``
    (model folder, device, search settings, sampling passes)."""
    return evaluate_case(worker_predictor(*settings), case, methods, margin_mm)


def evaluate_methods(
    cases: Sequence[Case],
    package: ModelPackage,
    methods: Sequence[str],
    device: str = "auto",
    samples: int | None = None,
    margin_mm: float = 3.0,
    progress: Progress | None = None,
    fragility: SearchConfig | None = None,
    cluster: ClusterSettings | None = None,
) -> Evaluation:
    """Run every method on every case and score it (see the module docstring for what is measured).

    Args:
        cases: labelled cases with their raters.
        package: the model package (its head and members serve the methods that need them).
        methods: names from :data:`EVALUATION_METHODS`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        samples: passes of MC dropout (default 10) and TTA (default 8).
        margin_mm: roi margin in mm.
        progress: receives stage ``"evaluate"`` after every case.
        fragility: settings of the fragility search (its defaults if None).
        cluster: run the cases on Dask (see :mod:`..cluster`): each worker loads the package (from
            its folder) once; the figures are those of a run in one process, cases folded in
            split order.

    Raises:
        SegUncertaintyError: a case failed (on a cluster: also when its worker died twice); an
            evaluation covers the whole split or is not written.
    """
    methods = check_methods(methods, package, samples)
    result = Evaluation(methods=methods, cases=len(cases), margin_mm=margin_mm)
    for method in methods:
        result.calibration[method] = CalibrationBins()
        result.confidence[method] = PooledScores()
        result.seconds[method] = 0.0
        for name in SCORES[method]:
            result.pooled[(method, name)] = PooledScores()
    report = progress or Progress()
    if cluster is None or not cluster.enabled:
        predictor = Predictor(package, device, samples, fragility)  # networks loaded once for the whole split
        for n, case in enumerate(cases):
            result.add(evaluate_case(predictor, case, methods, margin_mm))
            report("evaluate", (n + 1) / len(cases), case.case_id)
        return result
    settings = (str(package.path.resolve()), device, fragility, samples)
    finished: dict[int, CaseScores] = {}
    with open_client(cluster) as client:
        jobs = ((str(n), (case, methods, margin_mm, settings)) for n, case in enumerate(cases))
        for key, outcome in run_cases(client, _evaluate_on_worker, jobs):
            if isinstance(outcome, WorkerDied):
                raise SegUncertaintyError(f"case {cases[int(key)].case_id}: {outcome}")
            finished[int(key)] = outcome
            report("evaluate", len(finished) / len(cases), cases[int(key)].case_id)
    for n in range(len(cases)):  # in split order: the same figures as one process gives
        result.add(finished[n])
    return result
