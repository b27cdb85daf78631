"""Segmentation backbones built from a model card, with weights from safetensors.

A backbone maps ``(B, C_in, D, H, W)`` normalised images to ``(B, C, D, H, W)`` logits. Its
intermediate features are read with forward hooks on named submodules (see
:class:`FeatureTaps`), so the uncertainty head works on any backbone whose card names its taps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError
from ..fsutil import atomic_write
from .package import BACKBONE_FILE, ModelPackage


def _dynunet(args: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import DynUNet

    return DynUNet(spatial_dims=3, **args)


# name in the card's "architecture.name" -> builder taking "architecture.args"
ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {"DynUNet": _dynunet}


def dynunet_architecture(
    in_channels: int,
    out_channels: int,
    filters: tuple[int, ...],
    dropout: float = 0.0,
) -> dict[str, Any]:
    """Card entry for an nnU-Net-style DynUNet: 3x3x3 kernels, full resolution first, then x2 pooling."""
    depth = len(filters)
    return {
        "name": "DynUNet",
        "args": {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "kernel_size": [3] * depth,
            "strides": [1] + [2] * (depth - 1),
            "upsample_kernel_size": [2] * (depth - 1),
            "filters": list(filters),
            "dropout": float(dropout) if dropout else None,
            "norm_name": ["instance", {"affine": True}],
            "res_block": True,
        },
    }


def dynunet_taps(filters: Sequence[int]) -> list[dict[str, Any]]:
    """Card entry naming the features the uncertainty head reads from a DynUNet.

    The outputs of the last (up to three) decoder stages, coarse to fine: for filters
    ``(8, 16, 32, 64)`` these are ``upsamples.0`` (32 channels, 1/4 resolution), ``upsamples.1``
    (16, 1/2) and ``upsamples.2`` (8, full resolution).
    """
    depth = len(filters)
    stages = range(max(0, depth - 4), depth - 1)
    return [{"name": f"upsamples.{s}", "channels": int(filters[depth - 2 - s])} for s in stages]


def build_backbone(architecture: dict[str, Any]) -> nn.Module:
    """A freshly initialised network from the card's ``architecture`` entry."""
    name = architecture.get("name")
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    args = dict(architecture.get("args", {}))
    if isinstance(args.get("norm_name"), list):
        args["norm_name"] = tuple(args["norm_name"])
    try:
        return ARCHITECTURES[name](args)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelError(f"cannot build {name} from the model card: {exc}") from None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (weights are checked against the card before loading)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unique_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's state dict with each shared tensor once, under its first name.

    Some networks register one parameter under two names (DynUNet's ``skip_layers`` alias its
    blocks); safetensors stores each tensor once, and keeping the first name makes files
    reproducible.
    """
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    state = {}
    for name, tensor in network.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            state[name] = tensor.detach().cpu().contiguous()
    return state


def load_weights(network: nn.Module, path: Path, expected_sha256: str | None = None) -> nn.Module:
    """Fill ``network`` with the tensors of a safetensors file.

    Refuses a missing, truncated, corrupted or altered file (checked against the card's SHA-256)
    and weights that do not fit the architecture.
    """
    if not path.is_file():
        raise ModelError(f"weights file missing: {path}")
    if expected_sha256 and sha256_of(path) != expected_sha256:
        raise ModelError(f"weights file {path} is corrupted or altered (its SHA-256 differs from the model card)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is corrupted or truncated ({exc})") from None
    expected = unique_state(network)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"weights in {path} do not fit the card's architecture ({detail})")
    try:
        network.load_state_dict(state, strict=False)  # the aliases share storage with the loaded names
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelError(f"weights in {path} do not fit the card's architecture: {first}") from None
    return network


def write_weights(network: nn.Module, path: Path) -> str:
    """Save a network's parameters and buffers as safetensors, atomically; returns the file's SHA-256."""
    with atomic_write(path) as tmp:
        save_file(unique_state(network), str(tmp))
    return sha256_of(path)


def load_torchscript(package: ModelPackage, args: dict[str, Any] | None = None) -> nn.Module:
    """The TorchScript network a card names (``architecture.name == "TorchScript"``, or ``args`` given).

    ``args`` (default: ``architecture.args``): ``file`` (a file of the package) or ``distribution`` and ``path`` (a file
    an installed Python package ships, e.g. deepbet's ``data/models/model.pt``), and ``output``
    (``logits`` or ``probabilities``). The file must match the SHA-256 the card gives for that
    name in ``files``: a TorchScript file is code, and only the one the card vouches for is run.
    """
    from .torchscript import TorchScriptBackbone, installed_file, load_script

    args = package.card.architecture.get("args", {}) if args is None else args
    if "file" in args:
        name, path = args["file"], package.file(args["file"])
    elif "distribution" in args and "path" in args:
        name, path = args["path"], installed_file(args["distribution"], args["path"])
    else:
        raise ModelError("a TorchScript model card needs architecture.args.file, or .distribution and .path")
    expected = package.card.files.get(name)
    if not expected:
        raise ModelError(f"the model card gives no SHA-256 for {name}; TorchScript files are only run when vouched for")
    if not path.is_file():
        raise ModelError(f"TorchScript file missing: {path}")
    if sha256_of(path) != expected:
        raise ModelError(f"TorchScript file {path} differs from the one the model card vouches for (SHA-256)")
    return TorchScriptBackbone(load_script(path), args.get("output", "logits"))


def load_backbone(package: ModelPackage, device: torch.device | str = "cpu", file: str = BACKBONE_FILE) -> nn.Module:
    """The package's backbone with its trained weights, in eval mode, on ``device``."""
    if package.card.architecture.get("name") == "TorchScript":
        return load_torchscript(package).to(device).eval()
    if package.card.architecture.get("name") == "nnUNet":
        from .nnunet import load_nnunet

        return load_nnunet(package).to(device).eval()
    network = build_backbone(package.card.architecture)
    load_weights(network, package.file(file), package.card.files.get(file))
    return network.to(device).eval()


class FeatureTaps:
    """Forward hooks that keep the outputs of named submodules during a forward pass.

    Usage::

        with FeatureTaps(network, ["upsamples.1", "upsamples.2"]) as taps:
            logits = network(x)
            features = taps.features   # name -> (B, C_f, d, h, w) tensor
    """

    def __init__(self, network: nn.Module, names: Iterable[str]):
        modules = dict(network.named_modules())
        modules.update(getattr(network, "tap_modules", {}).items())  # a wrapped network's own tap points
        self.names = list(names)
        unknown = [n for n in self.names if n not in modules]
        if unknown:
            raise ModelError(f"feature tap(s) {', '.join(unknown)} not found in the network")
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keeper(n)) for n in self.names]

    def _keeper(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.features[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
