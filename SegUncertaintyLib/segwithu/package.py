"""The SegWithU head inside a model package: ``head.safetensors`` and the card's ``head`` section."""

from __future__ import annotations

import torch

from ..errors import ModelError
from ..model.backbones import load_weights
from ..model.card import HEAD_FILE
from ..model.package import ModelPackage
from .network import HeadConfig, SegWithUHead

__all__ = ["HEAD_FILE", "has_head", "load_head"]


def has_head(package: ModelPackage) -> bool:
    """True when the card has a ``head`` section (its file was checked when the package was loaded)."""
    return package.card.head is not None


def load_head(package: ModelPackage, device: torch.device | str = "cpu") -> SegWithUHead:
    """The package's trained head, in eval mode, on ``device``."""
    if not has_head(package):
        raise ModelError(
            f"model {package.card.name!r} has no uncertainty head; train one with: seguncertainty train-head"
        )
    try:
        head = SegWithUHead(HeadConfig(**package.card.head.config))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"the head section of {package.path / 'model.json'} is malformed: {exc}") from None
    name = package.card.head.file
    load_weights(head, package.file(name), package.card.files.get(name))
    return head.to(device).eval()
