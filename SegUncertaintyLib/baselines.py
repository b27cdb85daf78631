"""Baseline uncertainty methods, each a function of the same engine, for comparison with the head.

* ``msp`` (max-softmax, ``1 - max_c p_c``) and ``entropy``: from the backbone's probabilities, one pass;
* ``mc-dropout``: M passes of a dropout-trained backbone with dropout active (batch and instance
  norms stay in eval mode);
* ``tta``: test-time augmentation with the 8 combinations of flips along the three axes (each window
  is flipped, segmented and flipped back);
* ``ensemble``: one pass of every backbone of a deep ensemble (see :mod:`.model.members`).

The sampling methods give ``entropy``, ``expected_entropy``, ``mutual_information`` and ``epkl``
maps (:class:`.uncertainty.SampleStatistics`) and predict the mean of the sampled probabilities.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from .errors import ModelError
from .inference import WindowFunction, backbone_window, resolve_device
from .methods import SAMPLING_METHODS, SINGLE_PASS_METHODS
from .model.backbones import load_backbone
from .model.members import dropout_package, ensemble_packages
from .model.package import ModelPackage
from .uncertainty import max_softmax_uncertainty, predictive_entropy

DEFAULT_SAMPLES = {"mc-dropout": 10, "tta": 8}
# every subset of the spatial axes of a (B, C, D, H, W) window, identity first
DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
FLIPS = [dims for n in range(4) for dims in itertools.combinations((2, 3, 4), n)]


def single_pass_map(method: str, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """The map of a single-pass baseline from ``(C, k, j, i)`` probabilities: ``max_softmax`` or ``entropy``."""
    if method == "msp":
        return {"max_softmax": max_softmax_uncertainty(probabilities).astype(np.float32)}
    if method == "entropy":
        return {"entropy": predictive_entropy(probabilities).astype(np.float32)}
    raise ModelError(f"{method!r} is not a single-pass method ({', '.join(SINGLE_PASS_METHODS)})")


def enable_dropout(network: nn.Module) -> nn.Module:
    """Eval mode everywhere except the dropout layers, which sample a new mask on every call."""
    network.eval()
    dropouts = [m for m in network.modules() if isinstance(m, DROPOUT_LAYERS)]
    if not dropouts:
        raise ModelError("the network has no dropout layers; MC dropout needs a backbone trained with --dropout")
    for module in dropouts:
        module.train()
    return network


def flipped_window(window_fn: WindowFunction, dims: tuple[int, ...]) -> WindowFunction:
    """Window function that sees each window flipped along ``dims`` and flips every output back."""
    if not dims:
        return window_fn

    def run(window: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: value.flip(dims) for name, value in window_fn(window.flip(dims)).items()}

    return run


def sample_count(method: str, samples: int | None) -> int:
    """How many passes a sampling method makes: ``samples`` or the method's default (TTA: at most 8)."""
    count = DEFAULT_SAMPLES.get(method) if samples is None else samples
    if method == "tta" and count is not None and not 2 <= count <= len(FLIPS):
        raise ModelError(f"tta uses 2 to {len(FLIPS)} flip combinations, not {count}")
    if method == "mc-dropout" and count is not None and count < 2:
        raise ModelError(f"mc-dropout needs at least 2 samples, not {count}")
    return count or 0


def check_available(method: str, package: ModelPackage, samples: int | None = None) -> None:
    """Fail early, before any slow step, when a sampling method cannot run with this package."""
    sample_count(method, samples)
    if method == "mc-dropout":
        dropout_package(package)
    elif method == "ensemble":
        ensemble_packages(package)


def sampling_windows(
    method: str, package: ModelPackage, device: str | torch.device = "auto", samples: int | None = None
) -> list[WindowFunction]:
    """One window function per pass of a sampling method, with its networks loaded on ``device``.

    Args:
        method: ``mc-dropout``, ``tta`` or ``ensemble``.
        package: the model package (and, for ensembles and MC dropout, its members).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        samples: passes for ``mc-dropout`` (default 10) and ``tta`` (default 8); ensembles use every member.
    """
    dev = resolve_device(device)
    if method == "mc-dropout":
        network = enable_dropout(load_backbone(dropout_package(package), dev))
        return [backbone_window(network)] * sample_count(method, samples)
    if method == "tta":
        window_fn = backbone_window(load_backbone(package, dev).eval())
        return [flipped_window(window_fn, dims) for dims in FLIPS[: sample_count(method, samples)]]
    if method == "ensemble":
        return [backbone_window(load_backbone(member, dev).eval()) for member in ensemble_packages(package)]
    raise ModelError(f"{method!r} is not a sampling method ({', '.join(SAMPLING_METHODS)})")
