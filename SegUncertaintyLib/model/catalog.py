"""What a model package offers: the summary ``seguncertainty models`` prints."""

from __future__ import annotations

from typing import Any

from ..errors import SegUncertaintyError
from ..resources import bundled_models
from .discovery import FoundModel
from .package import ModelPackage, load_package


def describe(package: ModelPackage) -> dict[str, Any]:
    """A JSON-friendly summary of a package: card facts, the uncertainty methods it supports, and whether it loads.

    ``ready`` is False (with ``problem`` saying why) when its network cannot be loaded here, e.g. a
    TorchScript file from a Python package that is not installed, or weights that fail their checksum.
    """
    from ..fragility.replay import has_replay
    from ..methods import METHODS
    from ..segwithu.package import has_head
    from .backbones import load_backbone
    from .members import dropout_rate, member_packages

    card = package.card
    backbones = [package, *member_packages(package)]
    carries = {
        None: True,
        "head": has_head(package),
        "dropout": any(dropout_rate(b) > 0 for b in backbones),
        "members": sum(dropout_rate(b) == 0 for b in backbones) >= 2,
        "replay": has_replay(package),
        "recalibration": card.recalibration is not None,
    }
    methods = [name for name, method in METHODS.items() if carries[method.needs]]
    summary = {
        "name": card.name,
        "path": str(package.path),
        "modality": card.modality,
        "classes": card.classes,
        "architecture": card.architecture.get("name"),
        "methods": methods,
        "description": card.description,
        "licence": card.licence,
        "held_out": card.training.get("held_out", {}),
    }
    try:
        load_backbone(package)
        summary["ready"] = True
    except SegUncertaintyError as exc:
        summary.update(ready=False, problem=str(exc))
    return summary


def list_models(extra: list[str] | None = None) -> list[dict[str, Any]]:
    """Summaries of the bundled packages and of the package folders in ``extra``."""
    return [describe(load_package(path)) for path in [*bundled_models().values(), *(extra or [])]]


def installed_problem(model: FoundModel) -> str | None:
    """Why an installed model (:func:`.discovery.discover`) cannot be run here, or None: what was
    found without loading anything, else what reading its nnU-Net plans finds (this imports torch)."""
    if model.problem is not None or model.source == "monai":
        return model.problem
    from .nnunet import nnunet_card

    try:
        nnunet_card(model.path)
    except SegUncertaintyError as exc:
        return str(exc)
    return None
