"""Training a segmentation backbone on a data set and writing it as a model package.

Each step draws random patches (two thirds centred near the foreground, the rest anywhere), flips
and rotates them, jitters their intensities, and trains on one rater's labels picked at random per
patch, so the network learns the raters' disagreement instead of one arbitrary outline. Loss:
Dice + cross-entropy (nnU-Net's choice). The held-out Dice is measured with the same inference
engine the CLI uses, against the majority vote of the raters.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.cases import Case
from .data.datasets import DatasetSpec, dataset_spec, load_dataset_cases
from .errors import DataError, SegUncertaintyError
from .inference import predict_volume, resolve_device
from .metrics import dice_per_class
from .model.backbones import build_backbone, dynunet_architecture, dynunet_taps, write_weights
from .model.card import ModelCard, ModelPackage, Normalization
from .model.package import BACKBONE_FILE, write_card
from .patches import PatchSampler
from .preprocess import normalize_intensities
from .progress import Progress

CT_CLIP = (-1000.0, 500.0)


@dataclass
class BackboneConfig:
    """Every knob of backbone training, with the defaults used for the bundled model."""

    name: str = "lidc-nodule"
    data: str = "lidc"
    filters: tuple[int, ...] = (8, 16, 32, 64)
    dropout: float = 0.0
    patch_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 4
    iterations: int = 1500
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    foreground_fraction: float = 0.67
    seed: int = 0
    train_limit: int | None = None  # cases of the train split to use (None: all)
    eval_split: str = "test"
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise SegUncertaintyError("iterations and batch size must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise SegUncertaintyError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.filters) < 3:
            raise SegUncertaintyError(f"a U-Net needs at least 3 stages of filters, got {self.filters}")


@dataclass
class TrainingReport:
    """What training measured."""

    seconds: float
    final_loss: float
    held_out: dict = field(default_factory=dict)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return a numpy generator (training is deterministic on CPU given the seed)."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def fit_normalization(spec: DatasetSpec, cases: Sequence[Case]) -> Normalization:
    """CT: clip to [-1000, 500] HU, then the training voxels' fixed mean and std. MRI: per-volume z-score."""
    if spec.normalization == "zscore":
        return Normalization(scheme="zscore", clip=None)
    clipped = np.concatenate([np.clip(c.image.ravel().astype(np.float32), *CT_CLIP) for c in cases])
    return Normalization(
        scheme="ct", clip=CT_CLIP, mean=round(float(clipped.mean()), 3), std=round(float(clipped.std()), 3)
    )


def evaluate_backbone(
    package: ModelPackage,
    network: torch.nn.Module,
    cases: Sequence[Case],
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict:
    """Dice of the backbone on held-out cases, with the inference engine the CLI uses.

    Dice is the mean over foreground classes; the reference is the raters' majority vote, and each
    rater in turn.

    Returns:
        Per-case Dice vs the majority vote and vs each rater, and their means and medians.
    """
    classes = package.card.num_classes
    rows = []
    for n, case in enumerate(cases):
        labels = predict_volume(case.volume, package, network=network, device=device).labels
        rows.append(
            {
                "case_id": case.case_id,
                "dice_majority": float(np.mean(dice_per_class(labels, case.majority, classes))),
                "dice_raters": [float(np.mean(dice_per_class(labels, r, classes))) for r in case.raters],
            }
        )
        if progress is not None:
            progress("evaluate", (n + 1) / len(cases))
    majority = np.array([r["dice_majority"] for r in rows])
    per_rater = np.array([np.mean(r["dice_raters"]) for r in rows])
    return {
        "cases": len(rows),
        "dice_vs_majority_mean": round(float(majority.mean()), 4),
        "dice_vs_majority_median": round(float(np.median(majority)), 4),
        "dice_vs_each_rater_mean": round(float(per_rater.mean()), 4),
        "per_case": rows,
    }


def train_backbone(
    config: BackboneConfig,
    output: Path,
    cache_dir: Path | None = None,
    device: str = "auto",
    command: str = "",
    progress: Progress | None = None,
) -> TrainingReport:
    """Train a DynUNet on the train split of ``config.data`` and write a model package to ``output``.

    Args:
        config: training settings.
        output: folder of the model package to write (``model.json`` + ``backbone.safetensors``).
        cache_dir: where ``prepare-data`` wrote the data set.
        device: ``auto``, ``cpu`` or ``cuda``.
        command: the command line, recorded in the model card.
        progress: receives stages ``"load"``, ``"train"``, ``"evaluate"``.

    Returns:
        Wall time, last loss and the held-out metrics (also written into the card).
    """
    from monai.losses import DiceCELoss

    report = progress or Progress()
    dev = resolve_device(device)
    rng = seed_everything(config.seed)
    report("load", 0.0)
    spec = dataset_spec(config.data)
    train = load_dataset_cases(config.data, "train", cache_dir, config.train_limit)
    held_out = load_dataset_cases(config.data, config.eval_split, cache_dir, config.eval_limit)
    if not train or not held_out:
        raise DataError(f"no {config.data} cases to train on or to evaluate")
    norm = fit_normalization(spec, train)
    images = [normalize_intensities(c.image, norm) for c in train]
    sampler = PatchSampler(images, [c.raters for c in train], config.patch_size, config.foreground_fraction, rng)
    report("load", 1.0, f"{len(train)} training cases")

    card = ModelCard(
        name=config.name,
        description=spec.description,
        architecture=dynunet_architecture(1, len(spec.classes), config.filters, config.dropout),
        classes=list(spec.classes),
        in_channels=1,
        modality=spec.modality,
        target_spacing_mm=spec.target_spacing_mm,
        patch_size=tuple(config.patch_size),
        normalization=norm,
        licence=spec.licence,
        taps=dynunet_taps(config.filters),
    )
    network = build_backbone(card.architecture).to(dev)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / config.iterations) ** 0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    start = time.perf_counter()
    network.train()
    recent: list[float] = []
    for step in range(config.iterations):
        x, y = sampler.sample(config.batch_size)
        loss = loss_fn(network(x.to(dev)), y.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = [*recent, loss.item()][-50:]
        report("train", (step + 1) / config.iterations, f"loss {np.mean(recent):.4f}")
    seconds = time.perf_counter() - start
    network.eval()

    output.mkdir(parents=True, exist_ok=True)
    package = ModelPackage(output, card)
    metrics = evaluate_backbone(package, network, held_out, str(dev), report)
    card.files = {BACKBONE_FILE: write_weights(network, output / BACKBONE_FILE)}
    card.training = {
        "command": command,
        "seconds": round(seconds, 1),
        "device": str(dev),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "data": {"dataset": config.data, "dataset_version": spec.version, "train_cases": len(train)},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "held_out": {
            "split": config.eval_split,
            "reference": "majority vote of the raters (ties to the higher class: >= half for one foreground class)",
            **{k: v for k, v in metrics.items() if k != "per_case"},
        },
    }
    write_card(card, output)
    return TrainingReport(seconds=seconds, final_loss=float(np.mean(recent)), held_out=metrics)
