"""Two-stage models: a small network finds the box of the structure, the main network runs on that box.

deepbet first locates the brain on the head resized to 128^3 and runs its main network on the brain's
box (plus a margin) resized to 256^3, so that the brain fills the network's field whatever the head's
field of view. A card asks for it with ``inference.crop``::

    "crop": {"architecture": {"name": "TorchScript", "args": {...}}, "shape": [128, 128, 128],
             "threshold": 0.5, "margin": 0.1}

The locating network sees the image normalised as the card says, resized to ``shape`` (network
axis order); its foreground probability above ``threshold``, largest connected component, gives
the box, grown by ``margin`` of its size on each side. The prediction on the box is put back onto
the whole grid: outside the box every voxel is background with certainty (probability 1,
uncertainty 0).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from .axis_order import AxisOrder
from .errors import InputError
from .model.backbones import load_torchscript
from .model.package import ModelPackage
from .preprocess import normalize_intensities, resize
from .volume import Volume

if TYPE_CHECKING:
    from torch import nn

    from .prediction import Prediction

Box = tuple[slice, slice, slice]


def load_locator(package: ModelPackage, device: torch.device) -> nn.Module | None:
    """A two-stage card's locating network, in eval mode, on ``device``; None when the card asks for no crop."""
    crop = package.card.inference.crop
    if not crop:
        return None
    return load_torchscript(package, crop["architecture"]["args"]).to(device).eval()


def find_box(
    volume: Volume,
    package: ModelPackage,
    device: torch.device,
    locator: nn.Module | None = None,
    normalised: np.ndarray | None = None,
) -> Box | None:
    """The ``(k, j, i)`` box the main network should run on, or None when the card asks for no crop.

    Args:
        volume: the input image, any grid.
        package: the model package (its card's ``inference.crop``).
        device: where the locating network runs.
        locator: the loaded locating network (:func:`load_locator`); loaded here if None.
        normalised: the volume's ``(k, j, i)`` intensities normalised for the package; made here if None.

    Raises:
        InputError: the locating network finds nothing (not an image of what the model segments).
    """
    crop = package.card.inference.crop
    if not crop:
        return None
    order = AxisOrder.for_geometry(volume.geometry, package.card.inference.orientation)
    small_shape = order.array_shape(tuple(int(n) for n in crop["shape"]))
    if normalised is None:
        normalised = normalize_intensities(volume.array, package.card.normalization)
    small = order.to_network(resize(torch.from_numpy(normalised).to(device)[None], small_shape))
    network = locator if locator is not None else load_locator(package, device)
    with torch.inference_mode():
        probability = torch.softmax(network(small[None]), dim=1)[0, 1]
        found = order.from_network(probability).cpu().numpy() > float(crop.get("threshold", 0.5))
    components, count = ndimage.label(found)
    if count == 0:
        raise InputError(f"model {package.card.name!r} finds no {package.card.classes[-1]} in this image")
    largest = 1 + int(np.argmax(ndimage.sum_labels(found, components, range(1, count + 1))))
    (box,) = ndimage.find_objects((components == largest).astype(np.int8))
    margin = float(crop.get("margin", 0.1))
    full = []
    for piece, n_small, n in zip(box, small_shape, volume.geometry.shape, strict=True):
        scale = n / n_small
        start, stop = piece.start * scale, piece.stop * scale
        grow = margin * (stop - start)
        full.append(slice(max(0, round(start - grow)), min(n, round(stop + grow))))
    return tuple(full)


def embed(prediction: Prediction, volume: Volume, box: Box) -> Prediction:
    """A prediction made on ``volume``'s box, put onto the whole grid (background outside the box)."""

    def whole(array: np.ndarray | None, background: float = 0.0, channel: int | None = None) -> np.ndarray | None:
        if array is None:
            return None
        out = np.zeros(array.shape[:-3] + volume.geometry.shape, dtype=array.dtype)
        if channel is not None:
            out[channel] = background
        out[(..., *box)] = array
        return out

    return replace(
        prediction,
        probabilities=whole(prediction.probabilities, 1.0, channel=0),
        labels=whole(prediction.labels),
        calibrated_probabilities=whole(prediction.calibrated_probabilities, 1.0, channel=0),
        maps={name: whole(value) for name, value in prediction.maps.items()},
        sample_labels=whole(prediction.sample_labels),
        geometry=volume.geometry,
    )
