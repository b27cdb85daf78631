"""Training the head on the user's own scans: unlabelled ones, or the corrections of review sessions.

``train-head --images DIR`` trains a head without a single label: its targets are the backbone's
disagreement with itself on corrupted copies (:mod:`.self_targets`). ``train-head --from-reviews
DIR`` goes on training the package's head (a new one if it has none) on the segmentations as
reviewers left them: the original segmentation is the prediction, the correction the reference.
Both write the head into the package like ``train-head --data``; the validation figures are
measured on fixed validation patches (or crops) against the same kind of target the head was
trained on, and say so.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..calibration import fit_logistic
from ..errors import ModelError
from ..inference import resolve_device
from ..metrics import aurc, auroc, expected_calibration_error, region_around
from ..model.backbones import load_backbone
from ..model.card import HeadSection
from ..model.package import load_package
from ..progress import Progress
from .network import SegWithUHead, temper
from .package import HEAD_FILE, has_head, load_head
from .scans import Scan
from .training import Batch, HeadTrainingConfig, deterministic, fit_head, freeze, write_head

SELF_REFERENCE = "the backbone's own prediction on corrupted copies (no labels)"
REVIEW_REFERENCE = "the segmentations as reviewers left them"
ROI_MM = 3.0  # the validation's roi: voxels this close to the prediction or the reference
DATA_SET_OPTIONS = ("data", "calibration_limit", "eval_split", "eval_limit")  # what --data trainings alone use


def batch_metrics(
    head: SegWithUHead, batches: list[Batch], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The head's figures on fixed batches, against the batches' own labels.

    The ``_roi`` figures count only the voxels within 3 mm of the prediction or the reference (where
    every error is, as ``evaluate`` measures); ``spacing`` is the grid's voxel size in mm (i, j, k).

    Returns:
        The metrics (the ranking figures None where the batches hold no error, or nothing else), and
        the pooled ranking scores and error labels (to fit the error-probability scale).
    """
    ranking, msp, errors, raw, calibrated, roi = [], [], [], [], [], []
    head.eval()
    with torch.no_grad():
        for logits, features, labels in batches:
            outputs = head(logits, features)
            probabilities = torch.softmax(logits, dim=1)
            wrong = logits.argmax(dim=1) != labels
            ranking.append(outputs.ranking[:, 0].flatten().cpu().numpy())
            msp.append((1.0 - probabilities.max(dim=1).values).flatten().cpu().numpy())
            errors.append(wrong.flatten().cpu().numpy())
            raw.append(probabilities.max(dim=1).values.flatten().cpu().numpy())
            tempered = torch.softmax(temper(logits, outputs.calibration), dim=1)
            calibrated.append(tempered.max(dim=1).values.flatten().cpu().numpy())
            predicted, reference = (logits.argmax(dim=1) > 0).cpu().numpy(), (labels > 0).cpu().numpy()
            for pair in zip(predicted, reference, strict=True):
                roi.append(region_around(np.stack(pair), ROI_MM, spacing).ravel())
    scores, wrong = np.concatenate(ranking), np.concatenate(errors)
    msp_all, raw_all, cal_all = np.concatenate(msp), np.concatenate(raw), np.concatenate(calibrated)
    near = np.concatenate(roi)

    def significant(value: float) -> float:
        return float(f"{value:.4g}")

    def ranking_figure(
        metric: Callable[[np.ndarray, np.ndarray], float], values: np.ndarray, where: np.ndarray | None = None
    ) -> float | None:
        values, errors = (values, wrong) if where is None else (values[where], wrong[where])
        ranked = errors.any() and not errors.all()  # a ranking is only measured among both kinds of voxel
        return significant(metric(values, errors)) if ranked else None

    metrics = {
        "patches": sum(len(b[2]) for b in batches),
        "voxels": int(wrong.size),
        "error_rate": significant(wrong.mean()),
        "auroc_ranking": ranking_figure(auroc, scores),
        "auroc_max_softmax": ranking_figure(auroc, msp_all),
        "aurc_ranking": ranking_figure(aurc, scores),
        "aurc_max_softmax": ranking_figure(aurc, msp_all),
        "auroc_ranking_roi": ranking_figure(auroc, scores, near),
        "auroc_max_softmax_roi": ranking_figure(auroc, msp_all, near),
        "ece_raw": significant(expected_calibration_error(raw_all, ~wrong)),
        "ece_calibrated": significant(expected_calibration_error(cal_all, ~wrong)),
    }
    return metrics, scores, wrong


def train_head_on_scans(
    model: str | Path,
    scans: list[Scan],
    config: HeadTrainingConfig,
    device: str = "auto",
    command: str = "",
    progress: Progress | None = None,
    skipped: dict[str, str] | None = None,
) -> dict:
    """Train a head on the user's scans and write it into the package.

    Unlabelled scans train a new head from the backbone's disagreement with itself; labelled scans
    (review corrections) go on training the package's head, or a new one when it has none.

    Args:
        model: bundled model name or package folder (the head is written into that folder).
        scans: all unlabelled (:func:`.scans.read_scans`) or all labelled (:func:`.scans.read_reviews`).
        config: training settings (those of :data:`DATA_SET_OPTIONS` are not used).
        device: ``auto``, ``cpu`` or ``cuda``.
        command: the command line, recorded in the card.
        progress: receives stages ``"load"`` and ``"train"``.
        skipped: the scans left out and why, recorded in the card.

    Returns:
        The card's new ``head`` section, ``removed`` (the card's sections the new head made stale) and
        ``kept_previous``: True when training from corrections did not rank the held-out corrections'
        errors better than the package's head; the package is then left as it was, and the result
        holds both heads' ``validation`` figures instead of a section.
    """
    with deterministic():
        return _train_on_scans(model, scans, config, device, command, progress or Progress(), skipped or {})


def _train_on_scans(
    model: str | Path,
    scans: list[Scan],
    config: HeadTrainingConfig,
    device: str,
    command: str,
    report: Progress,
    skipped: dict[str, str],
) -> dict:
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    package = load_package(model)
    if not package.card.taps:
        raise ModelError(f"model {package.card.name!r} names no feature taps in its card; the head needs them")
    backbone = freeze(load_backbone(package, dev))
    labelled = scans[0].labels is not None
    start = load_head(package, dev) if labelled and has_head(package) else None
    started_from = package.card.head.training.get("command") if start is not None else None
    fitted = fit_head(package, backbone, scans, config, dev, report, start)
    spacing = tuple(package.card.target_spacing_mm)
    validation, scores, errors = batch_metrics(fitted.head, fitted.validation_batches, spacing)
    if start is not None:
        # The corrections held out for validation decide: a head that ranks their errors (near the
        # outlines, where they are) worse than the head it started from is not kept; with a few
        # corrected cases that happens (BENCHMARKS.md).
        before = batch_metrics(start, fitted.validation_batches, spacing)[0]
        now, then = validation["auroc_ranking_roi"], before["auroc_ranking_roi"]
        if now is not None and then is not None and now < then:
            return {
                "kept_previous": True,
                "validation": {"previous": before, "trained": validation},
                "scans": [s.case_id for s in scans],
                "skipped": skipped,
                "removed": [],
            }
    if validation["auroc_ranking"] is not None:
        slope, intercept = fit_logistic(scores, errors)
        error_probability = {"slope": slope, "intercept": intercept}
    else:  # nothing to fit the scale on: the previous head's scale, or none
        error_probability = package.card.head.error_probability if start is not None else None
    reference = REVIEW_REFERENCE if labelled else SELF_REFERENCE
    section = HeadSection(
        method="segwithu",
        file=HEAD_FILE,
        config=fitted.head.config.to_dict(),
        error_probability=error_probability,
        training={
            "command": command,
            "seconds": round(fitted.fit.seconds, 1),
            "device": str(dev),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "data": {
                "source": "review sessions" if labelled else "unlabelled scans",
                "reference": reference,
                "scans": [s.case_id for s in scans],
                "skipped": skipped,
                "started_from": started_from,
                **fitted.data,
            },
            "config": {k: v for k, v in asdict(fitted.config).items() if k not in DATA_SET_OPTIONS},
            "epochs": fitted.fit.epochs,
            "best_epoch": fitted.fit.best_epoch,
            "validation_loss": fitted.fit.history,
        },
        validation={**validation, "voxel_set": f"the fixed validation patches, pooled; reference: {reference}"},
        held_out=None,
    )
    removed = write_head(package, fitted.head, section)
    return {**section.to_dict(), "kept_previous": False, "removed": removed}
