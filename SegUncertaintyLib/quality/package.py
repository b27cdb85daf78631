"""The quality predictors inside a model package: the card's ``quality`` section and ``quality_net.safetensors``."""

from __future__ import annotations

from ..model.backbones import load_weights
from ..model.package import ModelPackage
from .predictor import LinearQuality, QualityNet

NET_FILE = "quality_net.safetensors"


def has_quality(package: ModelPackage) -> bool:
    """True when the package carries trained quality predictors."""
    return "quality" in package.card.extra and NET_FILE in package.card.files


def load_quality(package: ModelPackage) -> tuple[LinearQuality, QualityNet, float]:
    """The linear predictor, the network (eval mode, CPU) and the volume spread scale of a package."""
    section = package.card.extra["quality"]
    net = QualityNet()
    load_weights(net, package.file(NET_FILE), package.card.files[NET_FILE])
    return LinearQuality(**section["linear"]), net.eval(), float(section["volume_scale"])
