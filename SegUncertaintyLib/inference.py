"""The inference engine every front end calls.

``predict_volume`` takes a :class:`Volume` on any grid, resamples it to the model's spacing,
normalises it, runs Gaussian-blended sliding-window inference (MONAI), and returns per-class
probabilities and the label map on the input grid, plus, on request, the outputs of named
submodules ("taps") blended on the model grid for the uncertainty head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from torch import nn

from .errors import InputError, ModelError
from .model.backbones import FeatureTaps, load_backbone
from .model.card import ModelCard
from .model.package import ModelPackage
from .network_grid import NetworkGrid
from .prediction import Prediction
from .preprocess import normalize_intensities
from .progress import Progress
from .roi import embed, find_box
from .uncertainty import SampleStatistics
from .volume import Volume


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


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI visits on a grid of ``shape`` (padded up to ``roi``)."""
    size = [max(s, r) for s, r in zip(shape, roi, strict=True)]
    interval = [r if r == s else max(1, int(r * (1 - overlap))) for s, r in zip(size, roi, strict=True)]
    return len(dense_patch_slices(size, roi, interval))


WindowFunction = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class WindowHead(Protocol):
    """An uncertainty head read in the same backbone pass (SegWithU's :class:`~.segwithu.network.SegWithUHead`).

    The engine knows a head only by this: which submodules it reads, which maps it writes, how to
    compute them for a window, and how its calibration map tempers logits on the input grid.
    """

    output_names: tuple[str, ...]  # the maps :meth:`maps` gives, blended and resampled in this order

    @property
    def tap_names(self) -> list[str]: ...

    def maps(
        self, logits: torch.Tensor, features: Sequence[torch.Tensor], names: Sequence[str] = ()
    ) -> dict[str, torch.Tensor]:
        """``(B, 1, D, H, W)`` maps of ``names`` for ``(B, C, D, H, W)`` window logits and the tapped features."""
        ...

    def calibrated_logits(self, logits: torch.Tensor, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(C, k, j, i)`` calibrated logits from logits and the head's ``(k, j, i)`` maps (same argmax)."""
        ...

    def to(self, device: torch.device) -> WindowHead: ...

    def eval(self) -> WindowHead: ...


def channels_last_network(network: nn.Module) -> nn.Module:
    """``network`` with its 3D convolution weights in channels-last order (in place), for windowed inference.

    With channels-last windows too, oneDNN runs the 3D convolutions without reordering each one:
    0.10 against 0.13 s for two 48^3 windows of the bundled backbone on 2 CPU cores. The logits
    differ from channels-first ones by rounding only (about 1e-5).
    """
    return network.to(memory_format=torch.channels_last_3d)


def backbone_window(network: nn.Module, taps: Sequence[str] = ()) -> WindowFunction:
    """Window function giving ``{"logits": (B, C, ...), "tap:<name>": (B, C_f, ...)}``."""

    channels_last_network(network)

    def run(window: torch.Tensor) -> dict[str, torch.Tensor]:
        with FeatureTaps(network, taps) as hooks:
            logits = network(window.contiguous(memory_format=torch.channels_last_3d))
        return {"logits": logits, **{f"tap:{k}": v for k, v in hooks.features.items()}}

    return run


def head_window(network: nn.Module, head: WindowHead, taps: Sequence[str] = ()) -> WindowFunction:
    """Window function giving the logits, the head's maps (``head.output_names``) and ``tap:<name>``, one pass."""
    names = list(dict.fromkeys([*head.tap_names, *taps]))

    channels_last_network(network)

    def run(window: torch.Tensor) -> dict[str, torch.Tensor]:
        with FeatureTaps(network, names) as hooks:
            logits = network(window.contiguous(memory_format=torch.channels_last_3d))
        maps = head.maps(logits, [hooks.features[name] for name in head.tap_names], head.output_names)
        return {"logits": logits, **maps, **{f"tap:{name}": hooks.features[name] for name in taps}}

    return run


def sliding_window_maps(
    window_fn: WindowFunction,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    progress: Progress | None = None,
    output_device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Gaussian-blended sliding-window outputs of a normalised image.

    Every output of ``window_fn`` is blended on its own (a coarser feature map at its own scale).

    Args:
        window_fn: maps a ``(B, C_in, *roi)`` batch of windows to named ``(B, C_k, ...)`` outputs.
        image: ``(C_in, D, H, W)`` normalised image on the network's device.
        roi_size: window size ``(D, H, W)`` in voxels.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        sw_batch_size: windows per forward pass.
        progress: called with stage ``"inference"`` after every batch of windows.
        output_device: where the blended outputs accumulate (default: the image's device).

    Returns:
        Output name -> ``(C_k, D, H, W)`` float32 blended map (coarser outputs at their own scale).
    """
    total = max(math.ceil(count_windows(image.shape[1:], roi_size, overlap) / sw_batch_size), 1)
    calls = 0
    layout: list[tuple[str, int]] = []  # names and channel counts of the outputs packed together

    def counted(window: torch.Tensor) -> dict[str, torch.Tensor]:
        # Outputs at the window's resolution are blended as one tensor: MONAI keeps a weight map and
        # does the weighted sums per output, which costs as much again as a small head.
        nonlocal calls
        out = window_fn(window)
        full = [name for name, value in out.items() if value.shape[2:] == window.shape[2:]]
        layout[:] = [(name, out[name].shape[1]) for name in full]
        packed = {"full": torch.cat([out[name] for name in full], dim=1)}
        packed.update({name: value for name, value in out.items() if name not in full})
        calls += 1
        if progress is not None:
            progress("inference", calls / total)
        return packed

    with torch.inference_mode():
        out = sliding_window_inference(
            image.unsqueeze(0),
            roi_size=tuple(roi_size),
            sw_batch_size=sw_batch_size,
            predictor=counted,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=float(image.min()),  # pad small images with background, not with zero
            device=output_device or image.device,
        )
    full = out.pop("full")[0].float()
    maps = dict(zip([name for name, _ in layout], torch.split(full, [n for _, n in layout]), strict=True))
    return {**maps, **{name: value[0].float() for name, value in out.items()}}


def _output_device(compute: torch.device, voxels: int, channels: int) -> torch.device:
    # Blend on the GPU while the accumulators fit comfortably; CT-sized multi-channel outputs go to the host.
    if compute.type == "cuda" and voxels * channels * 4 * 2 < 2 * 1024**3:
        return compute
    return torch.device("cpu")


def labels_on_network_grid(
    labels: np.ndarray, grid: NetworkGrid, num_classes: int, device: torch.device
) -> torch.Tensor:
    """``(D, H, W)`` uint8: a ``(k, j, i)`` label map brought onto the network's grid, class by class.

    Each class's indicator is resampled as the image is (:meth:`NetworkGrid.to_network`) and the
    largest wins, so that no label between two classes is invented by interpolating label values.
    """
    one_hot = torch.from_numpy(np.eye(num_classes, dtype=np.float32)[labels]).movedim(-1, 0)
    return argmax_labels(grid.to_network(one_hot.to(device)))


def argmax_labels(scores: torch.Tensor, slab: int = 16) -> torch.Tensor:
    """``(k, j, i)`` uint8 argmax over the class axis of ``(C, k, j, i)`` probabilities (or logits).

    Ties go to the lower class, as with ``torch.argmax``. A running maximum over the classes,
    slab by slab along k: ``torch.argmax`` over a short leading axis is 8-14x slower on CPU
    (10.6 s against 1.3 s for 3 x 300 x 512 x 512) and makes an int64 temporary 8x the size of the
    label map.
    """
    labels = torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for start in range(0, scores.shape[1], slab):
        part, out = scores[:, start : start + slab], labels[start : start + slab]
        best = part[0].clone()
        for index in range(1, scores.shape[0]):
            out.masked_fill_(part[index] > best, index)
            torch.maximum(best, part[index], out=best)
    return labels


def check_compatible(volume: Volume, package: ModelPackage) -> None:
    """Refuse an input the model cannot take (channel count)."""
    if package.card.in_channels != 1:
        raise ModelError(
            f"model {package.card.name!r} expects {package.card.in_channels} input channels but the input volume has 1"
        )
    if min(volume.geometry.shape) < 2:
        raise InputError(f"input volume of shape {volume.geometry.shape} is too thin to segment")


def whole_volume(package: ModelPackage) -> bool:
    """True when the network sees the whole volume at once, resized to the card's ``inference.shape``."""
    return package.card.inference.mode == "whole"


def prepare_image(
    volume: Volume,
    package: ModelPackage,
    device: torch.device,
    progress: Progress,
    normalised: np.ndarray | None = None,
) -> tuple[torch.Tensor, NetworkGrid]:
    """The network's input: the ``(1, D, H, W)`` normalised image on the model grid in the network's axis
    order (on ``device``), and that grid (:meth:`NetworkGrid.for_input`).

    ``normalised`` is the volume's ``(k, j, i)`` intensities already normalised for the package
    (:meth:`.predictor.Predictor.normalised`); made here if None.
    """
    progress("preprocess", 0.0)
    grid = NetworkGrid.for_input(volume.geometry, package)
    if normalised is None:
        normalised = normalize_intensities(volume.array, package.card.normalization)
    normalized = torch.from_numpy(normalised).to(device)
    image = grid.to_network(normalized[None])
    progress("preprocess", 1.0)
    return image, grid


def _crop(normalised: np.ndarray, box: tuple[slice, ...], card: ModelCard) -> np.ndarray | None:
    """The normalised image of a located box: cut from the whole one when the scheme is voxel-wise, else
    None (the box is normalised by its own statistics, as the network was trained)."""
    return np.ascontiguousarray(normalised[box]) if card.normalization.voxelwise else None


def blend_windows(
    window_fn: WindowFunction, image: torch.Tensor, package: ModelPackage, channels: int, progress: Progress
) -> dict[str, torch.Tensor]:
    """:func:`sliding_window_maps` with the window size, overlap and batch size of the model card."""
    inference = package.card.inference
    return sliding_window_maps(
        window_fn,
        image,
        roi_size=tuple(image.shape[1:]) if whole_volume(package) else package.card.patch_size,
        overlap=inference.overlap,
        sw_batch_size=inference.sw_batch_size,
        progress=progress,
        output_device=_output_device(image.device, int(np.prod(image.shape[1:])), channels),
    )


def predict_volume(
    volume: Volume,
    package: ModelPackage,
    network: nn.Module | None = None,
    head: WindowHead | None = None,
    device: str | torch.device = "auto",
    taps: Sequence[str] = (),
    progress: Progress | None = None,
    locate: bool = True,
    locator: nn.Module | None = None,
    normalised: np.ndarray | None = None,
) -> Prediction:
    """Segment a volume: probabilities and labels (and, with a head, its maps) on the input grid.

    Args:
        volume: input image, any spacing and direction; raw intensities (HU for CT).
        package: model package (card gives spacing, normalisation, patch size, classes).
        network: an already loaded backbone (eval mode) to reuse; loaded from the package if None.
        head: a SegWithU head for this backbone; its maps come from the same backbone pass.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        taps: submodule names whose outputs to return, blended on the model grid (``features``).
        progress: receives stages ``"preprocess"``, ``"inference"``, ``"resample"``.
        locate: run a two-stage card's locating network first (see :mod:`.roi`).
        locator: that network, already loaded (:func:`.roi.load_locator`); loaded here if None.
        normalised: the volume's ``(k, j, i)`` intensities normalised for the package, when already
            made (:meth:`.predictor.Predictor.normalised`).

    Returns:
        A :class:`Prediction`.
    """
    check_compatible(volume, package)
    card = package.card
    dev = resolve_device(device)
    if normalised is None:
        normalised = normalize_intensities(volume.array, card.normalization)
    box = find_box(volume, package, dev, locator, normalised) if locate else None
    if box is not None:
        inner = Volume(volume.array[box], volume.geometry.cropped(box))
        inside = predict_volume(
            inner, package, network, head, dev, taps, progress, False, None, _crop(normalised, box, card)
        )
        return embed(inside, volume, box)
    timings: dict[str, float] = {}
    report = progress or Progress()

    start = time.perf_counter()
    if network is None:
        network = load_backbone(package, dev)
    network = network.to(dev).eval()
    if head is not None:
        head = head.to(dev).eval()
    timings["load_model"] = time.perf_counter() - start

    start = time.perf_counter()
    image, grid = prepare_image(volume, package, dev, report, normalised)
    del normalised
    timings["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    window_fn = head_window(network, head, taps) if head is not None else backbone_window(network, taps)
    channels = card.num_classes + (len(head.output_names) if head is not None else 0)
    blended = blend_windows(window_fn, image, package, channels, report)
    blended = {name: grid.from_network(value) for name, value in blended.items()}
    del image
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    timings["inference"] = time.perf_counter() - start

    start = time.perf_counter()
    report("resample", 0.0)
    logits = blended.pop("logits")
    calibrated, maps = None, {}
    with torch.inference_mode():
        # Logits (not probabilities) are resampled, as nnU-Net does: the label map, the probabilities
        # and the tempered probabilities then share one argmax on the input grid, exactly.
        resampled = grid.to_input(logits)
        probabilities = torch.softmax(resampled, dim=0)
        labels = argmax_labels(resampled)
        if head is not None:
            maps = {name: grid.to_input(blended.pop(name))[0] for name in head.output_names}
            calibrated = torch.softmax(head.calibrated_logits(resampled, maps), dim=0).cpu().numpy()
            maps = {name: value.cpu().numpy() for name, value in maps.items()}
            scale = card.head.error_probability if card.head is not None else None
            if scale:
                maps["error_probability"] = error_probability(maps["ranking"], scale["slope"], scale["intercept"])
        del resampled
    report("resample", 1.0)
    timings["resample"] = time.perf_counter() - start
    return Prediction(
        probabilities=probabilities.cpu().numpy(),
        labels=labels.cpu().numpy(),
        geometry=volume.geometry,
        grid=grid,
        logits=logits.cpu(),
        features={k.removeprefix("tap:"): v.cpu() for k, v in blended.items() if k.startswith("tap:")},
        calibrated_probabilities=calibrated,
        maps=maps,
        timings=timings,
        device=str(dev),
    )


def error_probability(ranking: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """The ranking map as an estimated probability of error: ``sigmoid(slope * U_rnk + intercept)``.

    Monotone (``slope > 0``), so it orders voxels exactly like the ranking map; the two numbers are
    fitted on held-out calibration cases (see :func:`SegUncertaintyLib.calibration.fit_logistic`).
    """
    from scipy.special import expit

    return expit(slope * ranking.astype(np.float32) + np.float32(intercept)).astype(np.float32)


def predict_sampled(
    volume: Volume,
    package: ModelPackage,
    window_fns: Sequence[WindowFunction],
    device: str | torch.device = "auto",
    seed: int = 0,
    keep_sample_labels: bool = False,
    progress: Progress | None = None,
    locate: bool = True,
    locator: nn.Module | None = None,
    normalised: np.ndarray | None = None,
) -> Prediction:
    """Predict with M stochastic or alternative backbone passes and summarise them (MC dropout, TTA, ensembles).

    Each window function makes one whole-volume pass; its logits are resampled onto the input grid
    and turned into probabilities there, and only running sums are kept (see
    :class:`SampleStatistics`). The prediction is the mean of the sampled probabilities.

    Args:
        volume: input image, any grid.
        package: model package whose card gives the preprocessing (shared by every pass).
        window_fns: one window function per sample, networks already on ``device``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: seeds dropout masks (the global random state is left as it was).
        keep_sample_labels: also return every sample's label map (``(M, k, j, i)`` uint8).
        progress: receives stages ``"preprocess"``, ``"inference"``, ``"resample"``.
        locate: run a two-stage card's locating network first (see :mod:`.roi`).
        locator: that network, already loaded (:func:`.roi.load_locator`); loaded here if None.
        normalised: the volume's intensities normalised for the package, when already made.

    Returns:
        A :class:`Prediction` whose ``maps`` are those of :data:`SAMPLE_MAPS` on the input grid.
    """
    check_compatible(volume, package)
    dev = resolve_device(device)
    if normalised is None:
        normalised = normalize_intensities(volume.array, package.card.normalization)
    box = find_box(volume, package, dev, locator, normalised) if locate else None
    if box is not None:
        inner = Volume(volume.array[box], volume.geometry.cropped(box))
        sampled = predict_sampled(
            inner,
            package,
            window_fns,
            dev,
            seed,
            keep_sample_labels,
            progress,
            False,
            None,
            _crop(normalised, box, package.card),
        )
        return embed(sampled, volume, box)
    report = progress or Progress()
    timings: dict[str, float] = {"inference": 0.0, "resample": 0.0}
    start = time.perf_counter()
    image, grid = prepare_image(volume, package, dev, report, normalised)
    del normalised
    timings["preprocess"] = time.perf_counter() - start
    stats = SampleStatistics()
    labels_per_sample = []
    passes = len(window_fns)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(seed)
        for index, window_fn in enumerate(window_fns):
            start = time.perf_counter()

            def report_pass(stage: str, fraction: float = 0.0, message: str | None = None, index: int = index) -> None:
                report(stage, (index + fraction) / passes, message)

            logits = blend_windows(window_fn, image, package, package.card.num_classes, report_pass)["logits"]
            logits = grid.from_network(logits)
            timings["inference"] += time.perf_counter() - start
            start = time.perf_counter()
            resampled = grid.to_input(logits)
            stats.add_logits(resampled)
            if keep_sample_labels:
                labels_per_sample.append(argmax_labels(resampled).cpu().numpy())
            del logits, resampled
            timings["resample"] += time.perf_counter() - start
        probabilities = stats.mean_probabilities()
        labels = argmax_labels(probabilities)
        maps = {name: value.float().cpu().numpy() for name, value in stats.maps().items()}
    report("resample", 1.0)
    return Prediction(
        probabilities=probabilities.float().cpu().numpy(),
        labels=labels.cpu().numpy(),
        geometry=volume.geometry,
        grid=grid,
        maps=maps,
        sample_labels=np.stack(labels_per_sample) if keep_sample_labels else None,
        forward_passes=passes,
        timings=timings,
        device=str(dev),
    )
