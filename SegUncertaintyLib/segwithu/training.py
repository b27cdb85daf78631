"""Training the SegWithU head on a frozen backbone.

The head learns from the **head-calibration split**, never from the backbone's training cases:
on its own training cases a backbone makes fewer and easier errors than on new ones. That split is
divided by patient into a part the head is fitted on and a part for early stopping (and for
fitting the error-probability scale of the ranking map). The backbone is in eval mode, every one
of its parameters has ``requires_grad=False``, and its forward pass runs under ``no_grad``: no
gradient can reach it and its weights never change.

A pretrained whole-volume network (deepbet) has no split of ours it never saw and cannot run on a
patch: its head trains on crops of cached passes over new acquisitions of labelled heads and
validates on other acquisitions (:mod:`.whole_volume`); held-out subjects are the benchmark's job.
"""

from __future__ import annotations

import contextlib
import copy
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..calibration import fit_logistic
from ..data.cases import Case
from ..data.datasets import dataset_spec, load_dataset_cases
from ..errors import DataError, ModelError, SegUncertaintyError
from ..inference import (
    argmax_labels,
    labels_on_network_grid,
    predict_volume,
    prepare_image,
    resolve_device,
    whole_volume,
)
from ..metrics import aurc, auroc, expected_calibration_error
from ..model.backbones import FeatureTaps, load_backbone, write_weights
from ..model.card import HeadSection
from ..model.members import dropout_rate, member_packages
from ..model.package import ModelPackage, load_package, write_card
from ..patches import PatchSampler, centred_patch
from ..preprocess import normalize_intensities
from ..progress import Progress
from ..uncertainty import max_softmax_uncertainty
from .losses import LossWeights, head_loss
from .network import HeadConfig, SegWithUHead
from .package import HEAD_FILE
from .scans import Scan
from .self_targets import Corruptions, SelfLabeller
from .whole_volume import CropSampler, augmented_views, stack_crops


@dataclass
class HeadTrainingConfig:
    """Every knob of head training, with the defaults used for the bundled head."""

    data: str = "lidc"
    fusion_channels: int = 8
    probes: int = 8
    batch_size: int = 4
    max_epochs: int = 100
    patience: int = 10
    learning_rate: float = 1e-3
    min_learning_rate: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float = 12.0
    # share of patches centred on the foreground (a whole-volume model's crops: on its outline), the
    # reference's or the backbone's own on an unlabelled scan; None: 0.33 with labels, 0.66 without
    # (chosen on LIDC, BENCHMARKS.md, issue 21)
    foreground_fraction: float | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    calibration_limit: int | None = None
    eval_split: str = "test"
    eval_limit: int | None = None
    # whole-volume models only (see .whole_volume): new acquisitions per subject, and the crop edge in voxels
    acquisitions: int = 6
    validation_acquisitions: int = 1
    crop: int = 96
    losses: LossWeights = field(default_factory=LossWeights)
    # unlabelled scans: the perturbations whose disagreement is the target (see .self_targets)
    corruptions: Corruptions = field(default_factory=Corruptions)
    member_targets: bool = False  # and the package's ensemble members' labels, when it has members

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise SegUncertaintyError("batch size, epochs and patience must be at least 1")
        if not 0.0 < self.validation_fraction < 1.0:
            raise SegUncertaintyError("the validation fraction must be between 0 and 1")
        if self.foreground_fraction is not None and not 0.0 <= self.foreground_fraction <= 1.0:
            raise SegUncertaintyError(f"the foreground fraction must be in [0, 1], got {self.foreground_fraction}")

    def resolved(self, labelled: bool) -> HeadTrainingConfig:
        """These settings with the defaults that depend on whether the training data are labelled."""
        if self.foreground_fraction is not None:
            return self
        # The backbone's own disagreement is rarer away from its foreground than a rater's: a
        # label-free head learns more from patches that hold the structure.
        return replace(self, foreground_fraction=0.33 if labelled else 0.66)


def freeze(network: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter."""
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def split_by_patient(cases: Sequence[Case], fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """``(fit, validation)``: about ``fraction`` of the patients (at least one) go to validation.

    With a single patient both parts are that patient's cases (a smoke-test data set).
    """
    patients = sorted({c.patient_id for c in cases})
    if len(patients) < 2:
        return list(cases), list(cases)
    order = np.random.default_rng(seed).permutation(len(patients))
    held = {patients[i] for i in order[: max(1, round(fraction * len(patients)))]}
    return [c for c in cases if c.patient_id not in held], [c for c in cases if c.patient_id in held]


def backbone_outputs(
    backbone: nn.Module, tap_names: list[str], x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frozen logits and tapped features of a batch (no autograd history)."""
    with torch.no_grad(), FeatureTaps(backbone, tap_names) as taps:
        logits = backbone(x)
    return logits, [taps.features[name] for name in tap_names]


def _validation_batch(images: list[np.ndarray], references: list[np.ndarray], patch: tuple[int, int, int]) -> tuple:
    """One fixed patch per image, centred on its reference's foreground (or its middle)."""
    xs, ys = [], []
    for image, reference in zip(images, references, strict=True):
        labels = np.asarray(reference, np.int64)
        foreground = np.argwhere(labels > 0)
        centre = foreground.mean(axis=0).round().astype(int) if len(foreground) else np.array(labels.shape) // 2
        x, y = centred_patch(image, labels, centre, patch)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)[:, None].astype(np.float32)), torch.from_numpy(np.stack(ys))


def _parameter_groups(head: nn.Module, weight_decay: float) -> list[dict]:
    # Decay conv weights only: scales, norms and the two rank scalars are not shrunk towards 0.
    decay = [p for p in head.parameters() if p.dim() > 1]
    keep = [p for p in head.parameters() if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def evaluate_head(
    package: ModelPackage,
    backbone: nn.Module,
    head: SegWithUHead,
    cases: Sequence[Case],
    device: str,
    progress: Progress | None = None,
    stage: str = "evaluate",
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Whole-case metrics of the head against the raters' majority vote, pooled over all voxels.

    Returns:
        The metrics, and the pooled ranking scores and error labels (to fit the error-probability scale).
    """
    ranking, msp, errors, conf_raw, conf_cal, correct = [], [], [], [], [], []
    for n, case in enumerate(cases):
        prediction = predict_volume(case.volume, package, network=backbone, head=head, device=device)
        wrong = prediction.labels != np.asarray(case.majority, np.uint8)
        ranking.append(prediction.maps["ranking"].ravel())
        msp.append(max_softmax_uncertainty(prediction.probabilities).ravel())
        errors.append(wrong.ravel())
        conf_raw.append(prediction.probabilities.max(axis=0).ravel())
        conf_cal.append(prediction.calibrated_probabilities.max(axis=0).ravel())
        correct.append(~wrong.ravel())
        if progress is not None:
            progress(stage, (n + 1) / len(cases))
    ranking, msp, errors = np.concatenate(ranking), np.concatenate(msp), np.concatenate(errors)
    conf_raw, conf_cal, correct = np.concatenate(conf_raw), np.concatenate(conf_cal), np.concatenate(correct)

    def significant(value: float) -> float:
        return float(f"{value:.4g}")

    metrics = {
        "cases": len(cases),
        "voxels": int(errors.size),
        "error_rate": significant(errors.mean()),
        "auroc_ranking": significant(auroc(ranking, errors)),
        "auroc_max_softmax": significant(auroc(msp, errors)),
        "aurc_ranking": significant(aurc(ranking, errors)),
        "aurc_max_softmax": significant(aurc(msp, errors)),
        "ece_raw": significant(expected_calibration_error(conf_raw, correct)),
        "ece_calibrated": significant(expected_calibration_error(conf_cal, correct)),
        "voxel_set": "all voxels of the cases, pooled; reference: the raters' majority vote",
    }
    return metrics, ranking, errors


@dataclass
class FitResult:
    epochs: int
    best_epoch: int
    history: list[float]  # validation loss after every epoch
    seconds: float


Batch = tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]
"""Frozen logits ``(B, C, D, H, W)``, tapped features ``[(B, C_f, d, h, w)]`` and labels ``(B, D, H, W)`` int64."""


def _fit_head(
    head: SegWithUHead,
    draw: Callable[[], Batch],
    validation: Sequence[Batch],
    config: HeadTrainingConfig,
    steps_per_epoch: int,
    report: Progress,
) -> FitResult:
    """AdamW with cosine decay, ``steps_per_epoch`` batches from ``draw`` per epoch; keeps the weights of the
    epoch with the lowest loss on the fixed ``validation`` batches and stops after ``patience`` epochs
    without a better one."""
    total_steps = steps_per_epoch * config.max_epochs
    optimizer = torch.optim.AdamW(_parameter_groups(head, config.weight_decay), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps, eta_min=config.min_learning_rate)
    generator = torch.Generator().manual_seed(config.seed)

    def validation_loss() -> float:
        head.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for logits, features, labels in validation:
                fixed = torch.Generator().manual_seed(12345)  # the same pairs at every validation
                total += head_loss(head(logits, features), logits, labels, config.losses, fixed)[0].item() * len(labels)
                count += len(labels)
        head.train()
        return total / count

    start_time = time.perf_counter()
    best = (validation_loss(), 0, copy.deepcopy(head.state_dict()))
    history: list[float] = []
    head.train()
    for epoch in range(1, config.max_epochs + 1):
        for step in range(steps_per_epoch):
            logits, features, labels = draw()
            loss, _ = head_loss(head(logits, features), logits, labels, config.losses, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            done = ((epoch - 1) * steps_per_epoch + step + 1) / total_steps
            report("train", done, f"epoch {epoch}, loss {loss.item():.4f}, best val {best[0]:.4f} (epoch {best[1]})")
        current = validation_loss()
        history.append(round(current, 5))
        if current < best[0]:
            best = (current, epoch, copy.deepcopy(head.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    seconds = time.perf_counter() - start_time
    head.load_state_dict(best[2])
    head.eval()
    report("train", 1.0, f"stopped after epoch {epoch}; best validation loss {best[0]:.4f} at epoch {best[1]}")
    return FitResult(epochs=epoch, best_epoch=best[1], history=history, seconds=seconds)


def train_head(
    model: str | Path,
    config: HeadTrainingConfig,
    cache_dir: Path | None = None,
    device: str = "auto",
    command: str = "",
    progress: Progress | None = None,
) -> dict:
    """Train a SegWithU head for a model package's frozen backbone and add it to the package.

    Args:
        model: bundled model name or package folder (the head is written into that folder).
        config: training settings.
        cache_dir: where ``prepare-data`` wrote the data set.
        device: ``auto``, ``cpu`` or ``cuda``.
        command: the command line, recorded in the card.
        progress: receives stages ``"load"``, ``"train"``, ``"validate"``, ``"evaluate"``.

    Returns:
        The card's new ``head`` section.
    """
    with deterministic():
        return _train_head(model, config, cache_dir, device, command, progress)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic algorithms while the head trains, the previous setting restored afterwards.

    The pairwise loss gathers with repeated indices; its backward only sums them in a fixed order
    in deterministic mode (on a GPU a few ops have no deterministic kernel: they warn instead).
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def check_trainable(package: ModelPackage, data: str) -> None:
    """Refuse, before any work, a head the data set or the model cannot give.

    Raises:
        ModelError: the model names no taps or segments other classes than the data set labels.
    """
    card, spec = package.card, dataset_spec(data)
    if not card.taps:
        raise ModelError(f"model {card.name!r} names no feature taps in its card; the head needs them")
    if tuple(card.classes) != tuple(spec.classes):
        raise ModelError(
            f"model {card.name!r} segments {', '.join(card.classes[1:])} ({card.modality}) but data set {data!r} "
            f"labels {', '.join(spec.classes[1:])} ({spec.modality}); choose a data set with the model's classes"
        )


def _fit_on_patches(
    package: ModelPackage,
    backbone: nn.Module,
    head: SegWithUHead,
    cases: list[Case | Scan],
    config: HeadTrainingConfig,
    dev: torch.device,
    rng: np.random.Generator,
    report: Progress,
    labeller: SelfLabeller | None = None,
) -> tuple[FitResult, list[Case | Scan], dict, list[Batch]]:
    """A sliding-window model: patches of the fit cases through the frozen backbone at every step.

    The patches' labels are the reference's, or, with ``labeller``, the backbone's own on a
    corrupted copy drawn at every step (the reference, then the backbone's prediction, only centres
    the patches).
    """
    fit_cases, validation_cases = split_by_patient(cases, config.validation_fraction, config.seed)
    arrays = {}
    for n, case in enumerate(cases):
        arrays[case.case_id] = _network_arrays(case, package, backbone, dev)
        report("load", (n + 1) / len(cases), f"{case.case_id} on the network's grid")
    sampler = PatchSampler(
        [arrays[c.case_id][0] for c in fit_cases],
        [arrays[c.case_id][1][None] for c in fit_cases],
        tuple(package.card.patch_size),
        config.foreground_fraction,
        rng,
        augment=False,  # the head must learn the backbone's errors on images as they come
    )
    val_x, val_y = _validation_batch(
        [arrays[c.case_id][0] for c in validation_cases],
        [arrays[c.case_id][1] for c in validation_cases],
        tuple(package.card.patch_size),
    )
    report("load", 1.0, f"{len(fit_cases)} fit / {len(validation_cases)} validation cases")
    validation_labeller = None if labeller is None else labeller.reseeded(config.seed + 1)

    def batch(x: torch.Tensor, y: torch.Tensor, label: SelfLabeller | None) -> Batch:
        x = x.to(dev)
        return (*backbone_outputs(backbone, head.tap_names, x), y.to(dev) if label is None else label(x))

    def draw() -> Batch:
        x, y = sampler.sample(config.batch_size)
        return batch(x, y[:, 0], labeller)

    validation_batches = [
        batch(val_x[n : n + config.batch_size], val_y[n : n + config.batch_size], validation_labeller)
        for n in range(0, len(val_x), config.batch_size)
    ]
    fit = _fit_head(head, draw, validation_batches, config, math.ceil(len(fit_cases) / config.batch_size), report)
    data = {"fit_cases": len(fit_cases), "validation_cases": len(validation_cases)}
    return fit, validation_cases, data, validation_batches


def _network_arrays(
    case: Case | Scan, package: ModelPackage, backbone: nn.Module, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, H, W)`` float32 normalised image and uint8 labels on the network's grid.

    A data set's case is on the model grid already: its image is normalised and its labels are the
    consensus. A scan is brought onto the grid as inference brings it; its labels are its
    reference's, or the backbone's own prediction for an unlabelled scan.
    """
    card = package.card
    if isinstance(case, Case):
        if not np.allclose(case.geometry.spacing, card.target_spacing_mm, atol=1e-3):
            raise DataError(f"case {case.case_id} is not on the model's {card.target_spacing_mm} mm grid")
        return normalize_intensities(case.image, card.normalization), np.asarray(case.majority, np.uint8)
    volume = case.volume
    normalised = normalize_intensities(volume.array, card.normalization)  # once, for the image and the prediction
    image, grid = prepare_image(volume, package, device, Progress(), normalised)
    if case.labels is not None:
        labels = labels_on_network_grid(case.labels, grid, card.num_classes, device)
    else:
        prediction = predict_volume(volume, package, backbone, device=device, locate=False, normalised=normalised)
        labels = argmax_labels(prediction.logits)
    return image[0].cpu().numpy(), labels.cpu().numpy()


def _fit_on_whole_volumes(
    package: ModelPackage,
    backbone: nn.Module,
    head: SegWithUHead,
    cases: list[Case | Scan],
    config: HeadTrainingConfig,
    dev: torch.device,
    rng: np.random.Generator,
    report: Progress,
    labeller: SelfLabeller | None = None,
) -> tuple[FitResult, list[Case | Scan], dict, list[Batch]]:
    """A whole-volume model: crops of cached passes over new acquisitions of every case (see :mod:`.whole_volume`).

    Validation uses other acquisitions of the same subjects (new scans, same anatomy); a held-out
    subject is what a leave-one-subject-out evaluation measures (``benchmarks/brain_uncertainty.py``).
    With ``labeller``, an unlabelled scan's acquisition is labelled by one corrupted pass of the
    backbone, drawn once and cached with the view.
    """
    taps = head.tap_names
    views, _ = augmented_views(cases, config.acquisitions, package, backbone, taps, dev, rng, report, labeller=labeller)
    validation_labeller = None if labeller is None else labeller.reseeded(config.seed + 1)
    validation_views, validation_cases = augmented_views(
        cases, config.validation_acquisitions, package, backbone, taps, dev, rng, labeller=validation_labeller
    )
    sampler = CropSampler(views, config.crop, config.foreground_fraction, rng)
    fixed = CropSampler(validation_views, config.crop, config.foreground_fraction, np.random.default_rng(config.seed))
    validation_batches = [
        stack_crops([fixed.cut(view, fixed.corner(view))], dev) for view in validation_views for _ in range(4)
    ]
    report("load", 1.0, f"{len(views)} fit / {len(validation_views)} validation acquisitions of {len(cases)} subjects")
    fit = _fit_head(
        head,
        lambda: sampler.sample(config.batch_size, dev),
        validation_batches,
        config,
        math.ceil(len(views) / config.batch_size),
        report,
    )
    data = {
        "subjects": [c.case_id for c in cases],
        "fit_acquisitions": len(views),
        "validation_cases": len(validation_cases),
    }
    return fit, validation_cases, data, validation_batches


@dataclass
class FittedHead:
    """A head trained by :func:`fit_head`: the cases it was validated on, what it was fitted on, and the
    fixed validation batches (patches or crops, with their training targets)."""

    head: SegWithUHead
    fit: FitResult
    validation_cases: list[Case | Scan]
    data: dict
    validation_batches: list[Batch]
    config: HeadTrainingConfig  # the settings used (see HeadTrainingConfig.resolved)


def fit_head(
    package: ModelPackage,
    backbone: nn.Module,
    cases: Sequence[Case | Scan],
    config: HeadTrainingConfig,
    device: torch.device,
    progress: Progress | None = None,
    start: SegWithUHead | None = None,
) -> FittedHead:
    """Train a SegWithU head for a frozen backbone (seed torch first for a reproducible head).

    Sliding-window models train on patches of part of the cases (split by patient) and validate on
    the rest; whole-volume models on crops of cached passes over new acquisitions of every case,
    validated on other acquisitions (see :mod:`.whole_volume`). Unlabelled scans are labelled by
    the backbone itself on corrupted copies (:mod:`.self_targets`): no label is used.

    Args:
        package: the model package (card: taps, classes, inference mode).
        backbone: its frozen network on ``device`` (see :func:`freeze`).
        cases: labelled cases (images ``(k, j, i)``, raters ``(R, k, j, i)``), or scans, all labelled
            or all unlabelled.
        config: training settings.
        device: where the networks run.
        progress: receives stages ``"load"`` and ``"train"``.
        start: a trained head to go on training (a copy is trained); a new head if None.
    """
    card = package.card
    unlabelled = [isinstance(c, Scan) and c.labels is None for c in cases]
    if any(unlabelled) and not all(unlabelled):
        raise DataError("train a head on labelled or on unlabelled scans, not on both at once")
    config = config.resolved(labelled=not any(unlabelled))
    if start is not None:
        head = copy.deepcopy(start).to(device)
    else:
        head = SegWithUHead(
            HeadConfig(
                taps=card.taps,
                num_classes=card.num_classes,
                fusion_channels=config.fusion_channels,
                probes=config.probes,
            )
        ).to(device)
    FeatureTaps(backbone, head.tap_names).close()  # fail early, clearly, on a tap the backbone lacks
    fit_on = _fit_on_whole_volumes if whole_volume(package) else _fit_on_patches
    rng = np.random.default_rng(config.seed)
    labeller = None
    if any(unlabelled):
        members = [m for m in member_packages(package) if dropout_rate(m) == 0.0] if config.member_targets else []
        networks = [freeze(load_backbone(member, device)) for member in members]
        labeller = SelfLabeller(backbone, config.corruptions, config.seed, networks)
    fitted = fit_on(package, backbone, head, list(cases), config, device, rng, progress or Progress(), labeller)
    return FittedHead(head, *fitted, config)


def write_head(package: ModelPackage, head: SegWithUHead, section: HeadSection) -> list[str]:
    """Write the head's weights and the card's ``head`` section into the package.

    The card's sections fitted on the previous head's maps (``quality``, ``guarantees``) no longer
    hold for the new one: they are removed (refit them with ``train-quality``).

    Returns:
        The names of the removed sections.
    """
    card = package.card
    removed = [name for name in ("quality", "guarantees") if getattr(card, name) is not None]
    for name in removed:
        setattr(card, name, None)
    card.files[section.file] = write_weights(head, package.file(section.file))
    card.head = section
    write_card(card, package.path)
    return removed


def _train_head(
    model: str | Path,
    config: HeadTrainingConfig,
    cache_dir: Path | None,
    device: str,
    command: str,
    progress: Progress | None,
) -> dict:
    report = progress or Progress()
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    package = load_package(model)
    check_trainable(package, config.data)
    backbone = freeze(load_backbone(package, dev))
    report("load", 0.0)
    cases = load_dataset_cases(config.data, "calibration", cache_dir, config.calibration_limit)
    fitted = fit_head(package, backbone, cases, config, dev, report)
    head, fit, validation_cases = fitted.head, fitted.fit, fitted.validation_cases

    validation, scores, errors = evaluate_head(package, backbone, head, validation_cases, str(dev), report, "validate")
    slope, intercept = fit_logistic(scores, errors)
    held_out = None
    if not whole_volume(package):  # a whole-volume data set's splits all hold the same subjects
        held_out_cases = load_dataset_cases(config.data, config.eval_split, cache_dir, config.eval_limit)
        held_out = {
            "split": config.eval_split,
            **evaluate_head(package, backbone, head, held_out_cases, str(dev), report)[0],
        }
    section = HeadSection(
        method="segwithu",
        file=HEAD_FILE,
        config=head.config.to_dict(),
        error_probability={"slope": slope, "intercept": intercept},
        training={
            "command": command,
            "seconds": round(fit.seconds, 1),
            "device": str(dev),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "data": {"dataset": config.data, "split": "calibration", **fitted.data},
            "config": asdict(fitted.config),
            "epochs": fit.epochs,
            "best_epoch": fit.best_epoch,
            "validation_loss": fit.history,
        },
        validation=validation,
        held_out=held_out,
    )
    write_head(package, head, section)
    return section.to_dict()
