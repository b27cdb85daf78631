"""The SegWithU head inside a model package: ``head.safetensors`` and the card's ``head`` section."""

from __future__ import annotations

import torch

from ..errors import ModelError
from ..model.backbones import load_weights
from ..model.package import ModelPackage
from .network import HeadConfig, SegWithUHead

HEAD_FILE = "head.safetensors"


def has_head(package: ModelPackage) -> bool:
    """True when the package carries a trained SegWithU head."""
    return bool(package.card.head) and HEAD_FILE in package.card.files


def load_head(package: ModelPackage, device: torch.device | str = "cpu") -> SegWithUHead:
    """The package's trained head, in eval mode, on ``device``."""
    if not has_head(package):
        raise ModelError(
            f"model {package.card.name!r} has no uncertainty head; train one with: seguncertainty train-head"
        )
    try:
        head = SegWithUHead(HeadConfig(**package.card.head["config"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"the head section of {package.path / 'model.json'} is malformed: {exc}") from None
    load_weights(head, package.file(HEAD_FILE), package.card.files[HEAD_FILE])
    return head.to(device).eval()
