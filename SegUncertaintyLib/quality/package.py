"""The quality predictors inside a model package: the card's ``quality`` section and ``quality_net.safetensors``."""

from __future__ import annotations

from ..errors import ModelError
from ..model.backbones import load_weights
from ..model.card import QUALITY_NET_FILE as NET_FILE
from ..model.package import ModelPackage
from .predictor import LinearQuality, QualityNet

__all__ = ["NET_FILE", "has_quality", "load_quality"]


def has_quality(package: ModelPackage) -> bool:
    """True when the package carries trained quality predictors (its card's ``quality`` section names the network)."""
    return package.card.quality is not None


def load_quality(package: ModelPackage) -> tuple[LinearQuality, QualityNet, float]:
    """The linear predictor, the network (eval mode, CPU) and the volume spread scale of a package."""
    section = package.card.quality
    if section is None:
        raise ModelError(f"the model {package.card.name} has no quality predictors (train-quality makes them)")
    net = QualityNet()
    load_weights(net, package.file(section.net_file), package.card.files.get(section.net_file))
    return LinearQuality(**section.linear), net.eval(), section.volume_scale
