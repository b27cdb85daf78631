"""From an input volume to the network's grid and intensity scale, and back.

Resampling keeps the volume's direction and physical box and changes only the voxel size (see
:meth:`Geometry.resampled`), so going back to the input grid is the inverse resize. Both ways use
``torch.nn.functional.interpolate`` with ``align_corners=False``, which matches that geometry
exactly, runs on the GPU when there is one, and works channel-wise on logits and maps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model.package import Normalization


def normalize_intensities(array: np.ndarray, norm: Normalization) -> np.ndarray:
    """Map raw intensities to the network's input scale.

    Args:
        array: ``(k, j, i)`` raw intensities (HU for CT).
        norm: the model card's normalisation.

    Returns:
        ``(k, j, i)`` float32 normalised intensities.
    """
    out = array.astype(np.float32, copy=True)
    if norm.clip is not None:
        np.clip(out, norm.clip[0], norm.clip[1], out=out)
    if norm.scheme == "ct":
        mean, std = float(norm.mean), float(norm.std)
    else:  # zscore over the voxels above the minimum (excludes zero-filled background of MRI)
        body = out[out > out.min()]
        body = body if body.size else out
        mean, std = float(body.mean()), float(body.std()) or 1.0
    out -= mean
    out /= std
    return out


def resize(tensor: torch.Tensor, shape: tuple[int, int, int], mode: str = "trilinear") -> torch.Tensor:
    """Resize a ``(C, D, H, W)`` (or ``(B, C, D, H, W)``) tensor to spatial ``shape``, edge-aligned.

    ``mode`` is ``"trilinear"`` for intensities, logits and maps, ``"nearest-exact"`` for labels.
    The result keeps the input's dtype for floating tensors.
    """
    if tuple(tensor.shape[-3:]) == tuple(shape):
        return tensor
    batched = tensor.dim() == 5
    x = tensor if batched else tensor.unsqueeze(0)
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(x, size=tuple(shape), mode=mode, **kwargs)
    return out if batched else out.squeeze(0)
