"""A prediction is checked before anything is written: NaN, infinity or probabilities that do not sum to one are errors.

Weights that produce NaN (a damaged or diverged file whose SHA-256 still matches its card) would
otherwise give an empty segmentation, NaN maps and an estimated Dice of 1: a result that looks
fine. The error names the model file the bad values come from.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError
from .model.package import BACKBONE_FILE, ModelPackage, section_file
from .prediction import Prediction
from .segwithu.network import HEAD_MAPS

PROBABILITY_SUM_TOLERANCE = 1e-3  # float32 softmax and resampling stay well within this
# maps the SegWithU head computes, and the one scaled from its ranking (the rest come from the backbone, or the search)
HEAD_FILE_MAPS = (*HEAD_MAPS, "error_probability")


def network_file(package: ModelPackage) -> str:
    """Where the backbone's weights come from (a package file, an installed distribution's file, a checkpoint)."""
    args = package.card.architecture.get("args", {})
    if "file" in args:
        return str(package.file(args["file"]))
    if "distribution" in args:
        return f"{args.get('path')} of the installed {args['distribution']!r} package"
    if package.card.architecture.get("name") == "nnUNet":
        return f"the checkpoint in {package.path}"
    return str(package.file(BACKBONE_FILE))


def check_prediction(prediction: Prediction, package: ModelPackage, method: str) -> None:
    """Raise unless every array of the prediction is finite and its probabilities sum to one.

    Args:
        prediction: probabilities ``(C, k, j, i)``, calibrated probabilities and maps ``(k, j, i)``.
        package: the model that made it (named in the message).
        method: the uncertainty method (``segwithu``: the head's file is named for its maps).

    Raises:
        ModelError: naming the array and the model file.
    """
    head = str(package.file(section_file(package.card, "head") or "")) if method == "segwithu" else None
    arrays = {"probabilities": (prediction.probabilities, network_file(package))}
    if prediction.calibrated_probabilities is not None:
        arrays["calibrated probabilities"] = (prediction.calibrated_probabilities, head or network_file(package))
    for name, array in prediction.maps.items():
        source = head if head and name in HEAD_FILE_MAPS else network_file(package)
        arrays[f"{name} map"] = (array, source)
    for name, (array, source) in arrays.items():
        bad = _count_bad(array)
        if bad:
            raise ModelError(
                f"model {package.card.name!r} produced {bad} NaN or infinite values in its {name}: "
                f"{source} gives no usable output (damaged weights, or a network unstable on this input)"
            )
    for name in ("probabilities", "calibrated probabilities"):
        if name in arrays:
            worst = _largest_sum_error(arrays[name][0])
            if worst > PROBABILITY_SUM_TOLERANCE:
                raise ModelError(
                    f"model {package.card.name!r}'s {name} do not sum to 1 (off by up to {worst:.3g}): "
                    f"{arrays[name][1]} gives no usable output"
                )


def _slabs(array: np.ndarray, step: int = 16) -> list[np.ndarray]:
    """Views of ``(..., k, j, i)`` in slabs of ``step`` k-slices: the checks never copy a whole volume."""
    return [array[..., k : k + step, :, :] for k in range(0, array.shape[-3], step)]


def _count_bad(array: np.ndarray) -> int:
    return sum(slab.size - int(np.count_nonzero(np.isfinite(slab))) for slab in _slabs(array))


def _largest_sum_error(probabilities: np.ndarray) -> float:
    """max over voxels of ``|sum_c p_c - 1|`` for ``(C, k, j, i)`` probabilities."""
    return max(float(np.abs(slab.sum(axis=0, dtype=np.float64) - 1.0).max()) for slab in _slabs(probabilities))
