"""The quality predictors inside a model package: the card's ``quality`` section and ``quality_net.safetensors``."""

from __future__ import annotations

from ..model.backbones import load_weights
from ..model.package import QUALITY_NET_FILE as NET_FILE
from ..model.package import ModelPackage, section_file
from .predictor import LinearQuality, QualityNet

__all__ = ["NET_FILE", "has_quality", "load_quality"]


def has_quality(package: ModelPackage) -> bool:
    """True when the package carries trained quality predictors (its card's ``quality`` section names the network)."""
    return section_file(package.card, "quality") is not None


def load_quality(package: ModelPackage) -> tuple[LinearQuality, QualityNet, float]:
    """The linear predictor, the network (eval mode, CPU) and the volume spread scale of a package."""
    section = package.card.extra["quality"]
    net = QualityNet()
    name = section_file(package.card, "quality")
    load_weights(net, package.file(name), package.card.files.get(name))
    return LinearQuality(**section["linear"]), net.eval(), float(section["volume_scale"])
