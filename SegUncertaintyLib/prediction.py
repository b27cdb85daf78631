"""What one inference gives (:class:`Prediction`), and the figures read straight off it.

Every layer above the engine (the pipeline, quality, applicability, evaluation, the search) takes
a :class:`Prediction`; it lives here, below all of them, so none of them imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .network_grid import NetworkGrid
from .volume import Geometry


@dataclass(frozen=True)
class Prediction:
    """What one inference gives; never changed once made (:meth:`with_maps` gives a new one).

    Attributes:
        probabilities: ``(C, k, j, i)`` float32 class probabilities on the input grid (sum to 1).
        labels: ``(k, j, i)`` uint8 argmax of ``probabilities``.
        geometry: the input grid (every array here lies on it exactly).
        grid: the model grid the network ran on and the way between it and the input grid
            (:class:`~.network_grid.NetworkGrid`; for two-stage models, of the located box, see :mod:`.roi`).
        features: tap name -> ``(C_f, d, h, w)`` float32 tensor on (a scaled copy of) the model grid.
        logits: ``(C, k, j, i)`` float32 blended logits on the model grid (None for sampled predictions).
        calibrated_probabilities: with a head, ``(C, k, j, i)`` softmax of the tempered logits
            ``z / sqrt(1 + U_cal)`` on the input grid (same argmax as ``probabilities``).
        maps: with a head, ``(k, j, i)`` float32 maps on the input grid: ``ranking`` (higher = more
            likely wrong), ``calibration``, ``epistemic``, ``aleatoric`` and, when the package
            knows its scale, ``error_probability`` (the ranking map as an estimated probability of
            error, in [0, 1]).
        sample_labels: for sampled predictions asked to keep them, ``(M, k, j, i)`` uint8 label map of
            every sample on the input grid.
        forward_passes: passes of a backbone over the whole volume (1, or M for sampled predictions).
        timings: seconds per stage.
        device: where the network ran (``"cpu"``, ``"cuda:0"``).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    grid: NetworkGrid
    logits: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    calibrated_probabilities: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    sample_labels: np.ndarray | None = None
    forward_passes: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def model_geometry(self) -> Geometry:
        """The model grid (``grid.geometry``)."""
        return self.grid.geometry

    def with_maps(self, maps: dict[str, np.ndarray], **timings: float) -> Prediction:
        """This prediction with more ``(k, j, i)`` maps on its grid (a method's, the search's) and stage timings."""
        for name, array in maps.items():
            if array.shape != self.geometry.shape:
                raise ValueError(
                    f"map {name!r} of shape {array.shape} is not on the prediction's grid {self.geometry.shape}"
                )
        return replace(self, maps={**self.maps, **maps}, timings={**self.timings, **timings})


VOLUME_INTERVAL_LEVELS = (0.75, 0.25)


@dataclass(frozen=True)
class ClassVolume:
    """One foreground class's volume (mL): label map, expected (sum of probabilities) and interval.

    ``volume_interval_ml`` is the volume at the probability levels 0.75 and 0.25
    (:data:`VOLUME_INTERVAL_LEVELS`); ``calibrated_expected_volume_ml`` only with the head.
    """

    index: int
    name: str
    voxels: int
    volume_ml: float
    expected_volume_ml: float
    volume_interval_ml: tuple[float, float]
    calibrated_expected_volume_ml: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "voxels": self.voxels,
            "volume_ml": self.volume_ml,
            "expected_volume_ml": self.expected_volume_ml,
        }
        if self.calibrated_expected_volume_ml is not None:
            data["calibrated_expected_volume_ml"] = self.calibrated_expected_volume_ml
        data["volume_interval_ml"] = list(self.volume_interval_ml)
        return data


def best_probabilities(prediction: Prediction) -> np.ndarray:
    """``(C, k, j, i)`` the calibrated probabilities when the prediction has them, else the probabilities."""
    if prediction.calibrated_probabilities is None:
        return prediction.probabilities
    return prediction.calibrated_probabilities


def class_volumes(prediction: Prediction, classes: list[str]) -> list[ClassVolume]:
    """Per foreground class: voxel count, label-map volume and expected volume (sum of probabilities), mL.

    With calibrated probabilities, also their expected volume. ``volume_interval_ml`` is the volume
    of the voxels whose probability of the class (calibrated when available) is at least 0.75, and
    at least 0.25: how far the volume moves when the boundary is drawn at a stricter or a looser
    level.
    """
    voxel_ml = prediction.geometry.voxel_volume_ml
    counts = np.bincount(prediction.labels.ravel(), minlength=len(classes))
    best = best_probabilities(prediction)
    rows = []
    for index, name in enumerate(classes[1:], start=1):
        low, high = (round(np.count_nonzero(best[index] >= level) * voxel_ml, 4) for level in VOLUME_INTERVAL_LEVELS)
        calibrated = None
        if prediction.calibrated_probabilities is not None:
            calibrated = round(float(prediction.calibrated_probabilities[index].sum(dtype=np.float64)) * voxel_ml, 4)
        rows.append(
            ClassVolume(
                index=index,
                name=name,
                voxels=int(counts[index]),
                volume_ml=round(float(counts[index]) * voxel_ml, 4),
                expected_volume_ml=round(float(prediction.probabilities[index].sum(dtype=np.float64)) * voxel_ml, 4),
                volume_interval_ml=(low, high),
                calibrated_expected_volume_ml=calibrated,
            )
        )
    return rows


def risk_map(prediction: Prediction) -> tuple[str, np.ndarray]:
    """The map regions are drawn from, on a probability-of-error scale: ``(its name, (k, j, i) float32 map)``.

    The head's ``error_probability`` when the prediction has it, else ``1 - max_c p_c`` of the
    (calibrated when available) probabilities, the probability of error if they are calibrated.
    """
    if "error_probability" in prediction.maps:
        return "error_probability", prediction.maps["error_probability"]
    return "1 - max probability", (1.0 - best_probabilities(prediction).max(axis=0)).astype(np.float32)
