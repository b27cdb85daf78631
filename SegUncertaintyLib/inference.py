"""The inference engine every front end calls.

``predict_volume`` takes a :class:`Volume` on any grid, resamples it to the model's spacing,
normalises it, runs Gaussian-blended sliding-window inference (MONAI), and returns per-class
probabilities and the label map on the input grid, plus, on request, the outputs of named
submodules ("taps") blended on the model grid for the uncertainty head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from torch import nn

from .errors import InputError, ModelError
from .model.backbones import FeatureTaps, load_backbone
from .model.package import ModelPackage
from .preprocess import normalize_intensities, resize
from .progress import Progress
from .volume import Geometry, Volume


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; asking for CUDA without a GPU is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ModelError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


@dataclass
class Prediction:
    """What one inference gives.

    Attributes:
        probabilities: ``(C, k, j, i)`` float32 class probabilities on the input grid (sum to 1).
        labels: ``(k, j, i)`` uint8 argmax of ``probabilities``.
        geometry: the input grid (every array here lies on it exactly).
        model_geometry: the grid the network ran on (model spacing, same box and direction).
        features: tap name -> ``(C_f, d, h, w)`` float32 tensor on (a scaled copy of) the model grid.
        logits: ``(C, D, H, W)`` float32 blended logits on the model grid.
        timings: seconds per stage.
        device: where the network ran (``"cpu"``, ``"cuda:0"``).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    model_geometry: Geometry
    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI visits on a grid of ``shape`` (padded up to ``roi``)."""
    size = [max(s, r) for s, r in zip(shape, roi, strict=True)]
    interval = [r if r == s else max(1, int(r * (1 - overlap))) for s, r in zip(size, roi, strict=True)]
    return len(dense_patch_slices(size, roi, interval))


class _CountingPredictor:
    """Calls the network on a batch of windows, reports progress, returns logits (+ taps)."""

    def __init__(self, network: nn.Module, taps: Sequence[str], total_calls: int, progress: Progress | None):
        self.network = network
        self.taps = list(taps)
        self.total = max(total_calls, 1)
        self.calls = 0
        self.progress = progress

    def __call__(self, window: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.taps:
            with FeatureTaps(self.network, self.taps) as hooks:
                logits = self.network(window)
            out = {"logits": logits, **{f"tap:{k}": v for k, v in hooks.features.items()}}
        else:
            out = self.network(window)
        self.calls += 1
        if self.progress is not None:
            self.progress("inference", self.calls / self.total)
        return out


def sliding_window_logits(
    network: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    taps: Sequence[str] = (),
    progress: Progress | None = None,
    output_device: torch.device | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Gaussian-blended sliding-window logits of a normalised image.

    Args:
        network: maps ``(B, C_in, *roi)`` to ``(B, C, *roi)`` logits (eval mode).
        image: ``(C_in, D, H, W)`` normalised image on the network's device.
        roi_size: window size ``(D, H, W)`` in voxels.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        sw_batch_size: windows per forward pass.
        taps: submodule names whose outputs are blended too (at their own scale).
        progress: called with stage ``"inference"``.
        output_device: where the blended outputs accumulate (default: the image's device).

    Returns:
        ``(C, D, H, W)`` logits and tap name -> ``(C_f, d, h, w)`` blended features.
    """
    total_calls = math.ceil(count_windows(image.shape[1:], roi_size, overlap) / sw_batch_size)
    predictor = _CountingPredictor(network, taps, total_calls, progress)
    cval = float(image.min())  # pad small images with background, not with zero
    with torch.inference_mode():
        out = sliding_window_inference(
            image.unsqueeze(0),
            roi_size=tuple(roi_size),
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=cval,
            device=output_device or image.device,
        )
    if isinstance(out, dict):
        logits = out.pop("logits")[0]
        features = {k.removeprefix("tap:"): v[0] for k, v in out.items()}
    else:
        logits, features = out[0], {}
    return logits.float(), features


def _output_device(compute: torch.device, voxels: int, channels: int) -> torch.device:
    # Blend on the GPU while the accumulators fit comfortably; CT-sized multi-channel outputs go to the host.
    if compute.type == "cuda" and voxels * channels * 4 * 2 < 2 * 1024**3:
        return compute
    return torch.device("cpu")


def argmax_labels(probabilities: torch.Tensor, slab: int = 16) -> torch.Tensor:
    """``(k, j, i)`` uint8 argmax over the class axis of ``(C, k, j, i)`` probabilities.

    Works slab by slab along k: a whole-volume argmax makes an int64 temporary 8x the size of the
    label map (630 MB for a 512 x 512 x 300 CT).
    """
    labels = torch.empty(probabilities.shape[1:], dtype=torch.uint8, device=probabilities.device)
    for start in range(0, probabilities.shape[1], slab):
        labels[start : start + slab] = probabilities[:, start : start + slab].argmax(dim=0)
    return labels


def check_compatible(volume: Volume, package: ModelPackage) -> None:
    """Refuse an input the model cannot take (channel count)."""
    if package.card.in_channels != 1:
        raise ModelError(
            f"model {package.card.name!r} expects {package.card.in_channels} input channels but the input volume has 1"
        )
    if min(volume.geometry.shape) < 2:
        raise InputError(f"input volume of shape {volume.geometry.shape} is too thin to segment")


def predict_volume(
    volume: Volume,
    package: ModelPackage,
    network: nn.Module | None = None,
    device: str | torch.device = "auto",
    taps: Sequence[str] = (),
    progress: Progress | None = None,
) -> Prediction:
    """Segment a volume: probabilities and labels on the input grid.

    Args:
        volume: input image, any spacing and direction; raw intensities (HU for CT).
        package: model package (card gives spacing, normalisation, patch size, classes).
        network: an already loaded backbone (eval mode) to reuse; loaded from the package if None.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        taps: submodule names whose outputs to return, blended on the model grid.
        progress: receives stages ``"preprocess"``, ``"inference"``, ``"resample"``.

    Returns:
        A :class:`Prediction`.
    """
    check_compatible(volume, package)
    card = package.card
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    report = progress or Progress()

    start = time.perf_counter()
    if network is None:
        network = load_backbone(package, dev)
    network = network.to(dev).eval()
    timings["load_model"] = time.perf_counter() - start

    start = time.perf_counter()
    report("preprocess", 0.0)
    model_geometry = volume.geometry.resampled(card.target_spacing_mm)
    normalized = torch.from_numpy(normalize_intensities(volume.array, card.normalization)).to(dev)
    image = resize(normalized[None], model_geometry.shape)
    del normalized
    report("preprocess", 1.0)
    timings["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    out_dev = _output_device(dev, int(np.prod(model_geometry.shape)), card.num_classes)
    logits, features = sliding_window_logits(
        network,
        image,
        roi_size=card.patch_size,
        overlap=float(card.inference.get("overlap", 0.5)),
        sw_batch_size=int(card.inference.get("sw_batch_size", 2)),
        taps=taps,
        progress=report,
        output_device=out_dev,
    )
    del image
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    timings["inference"] = time.perf_counter() - start

    start = time.perf_counter()
    report("resample", 0.0)
    with torch.inference_mode():
        probabilities = resize(torch.softmax(logits, dim=0), volume.geometry.shape)
        labels = argmax_labels(probabilities)
    report("resample", 1.0)
    timings["resample"] = time.perf_counter() - start
    return Prediction(
        probabilities=probabilities.cpu().numpy(),
        labels=labels.cpu().numpy(),
        geometry=volume.geometry,
        model_geometry=model_geometry,
        logits=logits.cpu(),
        features={k: v.float().cpu() for k, v in features.items()},
        timings=timings,
        device=str(dev),
    )
