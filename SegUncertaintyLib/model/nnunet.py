"""nnU-Net v2 trained-model folders as backbones, read without nnU-Net and without unpickling code.

A trained-model folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``) holds
``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_final.pth``. From them this module makes a
model card (classes, channels, target spacing, patch size, nnU-Net's intensity normalisation and
the decoder stages as feature taps) and builds the network from the plans with
``dynamic_network_architectures`` (the package nnU-Net builds it with). The checkpoint is read with
``torch.load(weights_only=True)``, allowing only numpy's scalar and dtype types that nnU-Net's
training log holds: no object of arbitrary class can be created.

What differs from nnU-Net's own prediction: our resampling is trilinear on the logits (nnU-Net:
third-order spline on the image), no crop to the non-zero box, and no mirroring (that is our
``--uncertainty tta``). Only configurations whose ``transpose_forward`` is the identity are taken.
"""

from __future__ import annotations

import json
import pydoc
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .card import CARD_FORMAT, ModelCard, ModelPackage
from .discovery import CHECKPOINT
from .totalsegmentator import network_problem, task_of

NNUNET = "nnUNet"
# where network classes and their building blocks may come from (the plans name them as strings)
NETWORK_MODULES = ("dynamic_network_architectures.",)
BLOCK_MODULES = ("torch.nn.",)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None


def _configuration_name(folder: Path, plans: dict[str, Any]) -> str:
    # nnU-Net names the folder Trainer__Plans__configuration
    parts = folder.name.split("__")
    if len(parts) == 3 and parts[2] in plans["configurations"]:
        return parts[2]
    if "3d_fullres" in plans["configurations"]:
        return "3d_fullres"
    raise ModelError(f"cannot tell which configuration of {folder} was trained (expected Trainer__Plans__config)")


def _normalization(plans: dict[str, Any], configuration: dict[str, Any]) -> dict[str, Any]:
    schemes = configuration["normalization_schemes"]
    if len(schemes) != 1:
        raise ModelError(f"nnU-Net models with {len(schemes)} input channels are not supported yet (one is)")
    scheme = schemes[0]
    if scheme == "CTNormalization":
        stats = plans["foreground_intensity_properties_per_channel"]["0"]
        return {
            "scheme": "ct",
            "clip": [stats["percentile_00_5"], stats["percentile_99_5"]],
            "mean": stats["mean"],
            "std": max(stats["std"], 1e-8),
        }
    if scheme == "ZScoreNormalization":
        # with use_mask_for_norm nnU-Net standardises over the non-zero voxels, as our zscore does
        # (over the voxels above the minimum); without it over every voxel
        body = bool(configuration.get("use_mask_for_norm", [False])[0])
        return {"scheme": "zscore" if body else "zscore-all", "clip": None}
    raise ModelError(f"nnU-Net normalisation {scheme} is not supported (CTNormalization and ZScoreNormalization are)")


def nnunet_card(folder: Path, fold: int | None = None) -> ModelCard:
    """The model card of an nnU-Net v2 trained-model folder (``fold``: default the first fold with a final checkpoint).

    Raises:
        ModelError: the folder is incomplete or uses what the engine cannot reproduce.
    """
    problem = network_problem(folder.parent.name)  # a TotalSegmentator network that needs a crop first
    if problem is not None:
        raise ModelError(f"{folder}: {problem}")
    plans = _read_json(folder / "plans.json")
    dataset = _read_json(folder / "dataset.json")
    name = _configuration_name(folder, plans)
    configuration = plans["configurations"][name]
    if list(plans.get("transpose_forward", [0, 1, 2])) != [0, 1, 2]:
        raise ModelError(f"{folder}: nnU-Net plans that transpose the axes are not supported yet")
    if "architecture" not in configuration:
        raise ModelError(f"{folder}: plans without an 'architecture' entry (nnU-Net < 2.4) are not supported")
    folds = sorted(int(p.parent.name.split("_")[1]) for p in folder.glob(f"fold_*/{CHECKPOINT}"))
    fold = folds[0] if fold is None else fold
    if fold not in folds:
        raise ModelError(f"{folder} has no fold_{fold}/{CHECKPOINT} (folds with one: {folds})")
    labels = dataset["labels"]
    if any(not isinstance(v, int) for v in labels.values()) or sorted(labels.values()) != list(range(len(labels))):
        raise ModelError(f"{folder}: region-based or non-contiguous nnU-Net labels are not supported")
    classes = [n for n, _ in sorted(labels.items(), key=lambda item: item[1])]
    architecture = configuration["architecture"]
    features = list(architecture["arch_kwargs"]["features_per_stage"])
    depth = len(features)
    # decoder stage s outputs features[depth - 2 - s] channels, coarse to fine; the last three
    taps = [
        {"name": f"decoder.stages.{s}", "channels": int(features[depth - 2 - s])}
        for s in range(max(0, depth - 4), depth - 1)
    ]
    spacing_kji = configuration["spacing"]
    task = task_of(folder.parent.name)
    return ModelCard.from_dict(
        {
            "format": CARD_FORMAT,
            "name": f"{plans['dataset_name']}-{name}",
            "architecture": {
                "name": NNUNET,
                "args": {
                    "network_class_name": architecture["network_class_name"],
                    "arch_kwargs": architecture["arch_kwargs"],
                    "requires_import": architecture.get("_kw_requires_import", []),
                    "checkpoint": f"fold_{fold}/{CHECKPOINT}",
                },
            },
            "classes": classes,
            "in_channels": len(dataset["channel_names"]),
            "modality": str(dataset["channel_names"]["0"]),
            "target_spacing_mm": list(reversed(spacing_kji)),
            "patch_size": configuration["patch_size"],
            "normalization": _normalization(plans, configuration),
            "description": f"nnU-Net v2 model {folder.parent.name}/{folder.name}, fold {fold}"
            + (f" (TotalSegmentator's {task})" if task else ""),
            "inference": _inference(task),
            "taps": taps,
            "training": {"source": "nnU-Net v2 trained-model folder", "folder": str(folder.resolve())},
        },
        source=str(folder),
    )


def _inference(task: str | None) -> dict[str, Any]:
    """How to run the network: as nnU-Net does, in the stored image's voxel axes, half-window steps;
    a TotalSegmentator network as TotalSegmentator does, on the closest canonical (RAS) axes, and
    with 0.8-window steps for its total tasks."""
    if task is None:
        return {"overlap": 0.5, "sw_batch_size": 1, "frame": "voxel"}
    family = task.removesuffix("_fastest").removesuffix("_fast")
    return {"overlap": 0.2 if family in ("total", "total_v3", "total_mr") else 0.5, "sw_batch_size": 1, "frame": "RAS"}


def _locate(dotted: str, allowed: tuple[str, ...]) -> Any:
    if not dotted.startswith(allowed):
        raise ModelError(f"the nnU-Net plans name {dotted!r}; only classes from {', '.join(allowed)} are built")
    found = pydoc.locate(dotted)
    if found is None:
        raise ModelError(
            f"{dotted!r} named by the nnU-Net plans cannot be imported (pip install dynamic-network-architectures)"
        )
    return found


def _numpy_globals() -> list[Any]:
    """The numpy types nnU-Net checkpoints hold (logged floats): scalars rebuilt from bytes, and their dtypes."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint's contents, without unpickling anything but tensors, containers and numpy numbers."""
    if not path.is_file():
        raise ModelError(f"nnU-Net checkpoint missing: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read is the same answer: it is not a plain checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"refusing to load {path}: not a plain nnU-Net checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ModelError(f"{path} is not an nnU-Net checkpoint (no network_weights)")
    return checkpoint


def load_nnunet(package: ModelPackage) -> nn.Module:
    """The network of an nnU-Net package, built from its plans, with the checkpoint's weights (no deep supervision)."""
    args = package.card.architecture["args"]
    kwargs = dict(args["arch_kwargs"])
    for key in args.get("requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(kwargs[key], BLOCK_MODULES)
    network_class = _locate(args["network_class_name"], NETWORK_MODULES)
    kwargs["deep_supervision"] = False
    try:
        network = network_class(input_channels=package.card.in_channels, num_classes=package.card.num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build {args['network_class_name']} from the nnU-Net plans: {exc}") from None
    state = read_checkpoint(package.file(args["checkpoint"]))["network_weights"]
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"the checkpoint does not fit the plans' network: {str(exc).splitlines()[0]}") from None
    return network
