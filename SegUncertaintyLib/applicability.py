"""Is this scan what the model was made for? A verdict for every prediction, with its reasons.

Three checks, in this order (each failed check is a reason; any reason means *outside*):

1. **Modality** (from the card alone): a CT model expects Hounsfield units, so some fat or air
   (a 1st percentile below 0); an MR model expects no Hounsfield-like values (a scan whose 1st
   percentile is below -500 is a CT in HU).
2. **Resampling**: each voxel axis within a factor :data:`MAX_RESAMPLING` of the model's spacing;
   beyond that the network sees detail it was never shown, or an interpolated blur.
3. **Novelty** (when the package has an ``applicability`` section): a descriptor of the scan (the
   quantiles :data:`QUANTILES` of the normalised intensities, the log field of view along each of
   the patient's axes, and the mean and standard deviation over the scan of each channel of a
   backbone feature map: none of them depends on how the scan is stored)
   against the scans the section was fitted on. The score is the Mahalanobis distance with a
   shrunk covariance; the threshold is a split-conformal quantile: the covariance is fitted on one
   half of the reference scans (the head-calibration split, never seen by the backbone) and the
   threshold is the ``ceil((n + 1)(1 - alpha))``-th smallest score of the other half, so that a new
   scan drawn like the reference is called outside with probability at most ``alpha``
   (:data:`ALPHA`, 2 %). Nothing of the foreign scans a benchmark reports is used to choose it.

``seguncertainty fit-applicability`` fits the section (:func:`fit_section`); every ``predict``
writes :func:`assess`'s verdict into ``summary.json`` (``applicability``), and a scan outside
always needs review.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError
from .model.package import ModelPackage
from .network_grid import covering_grid
from .prediction import Prediction
from .preprocess import normalize_intensities
from .volume import Volume

QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
MAX_RESAMPLING = 4.0
ALPHA = 0.02
AIR_HU = -500.0  # below: air or lung, in HU; MR has no such values
SHRINKAGE = 0.1  # covariance shrunk towards its mean variance: the reference has few scans per dimension


def novelty_tap(package: ModelPackage) -> str | None:
    """The feature map the novelty score pools: the section's, else the card's first (deepest) tap."""
    section = package.card.extra.get("applicability", {})
    if section.get("tap"):
        return str(section["tap"])
    return str(package.card.taps[0]["name"]) if package.card.taps else None


def descriptor(volume: Volume, prediction: Prediction, package: ModelPackage) -> tuple[np.ndarray, list[str]]:
    """The scan's descriptor and the names of its components.

    Args:
        volume: the input, raw intensities ``(k, j, i)``.
        prediction: its prediction, with ``features`` holding the :func:`novelty_tap` map ``(C, d, h, w)``.
        package: the model.

    Returns:
        ``(D,)`` float64 vector: normalised-intensity quantiles, log10 field of view (mm) along
        the patient's x, y, z (the box of the scan's voxels; i, j, k for an axis-aligned scan),
        then per channel the feature map's mean and standard deviation over the model grid.
    """
    normalised = normalize_intensities(volume.array[::2, ::2, ::2], package.card.normalization)
    values = list(np.quantile(normalised, QUANTILES))
    names = [f"intensity q{round(100 * q)}" for q in QUANTILES]
    values += [math.log10(e) for e in covering_grid(volume.geometry, (1.0, 1.0, 1.0)).extent_mm]
    names += ["log10 field of view x", "log10 field of view y", "log10 field of view z"]
    tap = novelty_tap(package)
    if tap is not None and tap in prediction.features:
        features = prediction.features[tap].double().flatten(1)
        values += features.mean(dim=1).tolist() + features.std(dim=1).tolist()
        channels = features.shape[0]
        names += [f"{tap} mean {c}" for c in range(channels)] + [f"{tap} sd {c}" for c in range(channels)]
    return np.asarray(values, dtype=np.float64), names


def _shrunk_precision(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, precision matrix and standard deviations of ``(n, D)`` descriptors."""
    mean = reference.mean(axis=0)
    scale = reference.std(axis=0) + 1e-6
    standard = (reference - mean) / scale
    covariance = np.cov(standard, rowvar=False)
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.eye(len(mean))
    return mean, np.linalg.inv(covariance), scale


def _distance(x: np.ndarray, mean: np.ndarray, precision: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (np.atleast_2d(x) - mean) / scale
    return np.sqrt(np.einsum("nd,de,ne->n", z, precision, z))


def fit_section(
    descriptors: np.ndarray, names: Sequence[str], tap: str | None, alpha: float = ALPHA, seed: int = 0
) -> dict[str, Any]:
    """The card's ``applicability`` section from the reference scans' ``(n, D)`` descriptors (split conformal).

    Returns:
        Plain numbers: the mean, scales and precision of the fitting half, the threshold from the
        other half, ``alpha``, the number of scans in each half, the component names and the tap.
    """
    n = len(descriptors)
    if not 0 < alpha < 1:
        raise DataError(f"alpha must lie between 0 and 1, not {alpha}")
    if n < 20:
        raise DataError(f"{n} reference scans are too few to fit the novelty score (at least 20)")
    order = np.random.default_rng(seed).permutation(n)
    fit, held = descriptors[order[: n // 2]], descriptors[order[n // 2 :]]
    mean, precision, scale = _shrunk_precision(fit)
    scores = np.sort(_distance(held, mean, precision, scale))
    rank = math.ceil((len(held) + 1) * (1 - alpha))
    threshold = float(scores[min(rank, len(held)) - 1]) if rank <= len(held) else float("inf")
    if not math.isfinite(threshold):
        raise DataError(f"alpha {alpha} needs more than {len(held)} held-out scans (use a larger alpha)")
    return {
        "method": "Mahalanobis distance (shrunk covariance), split-conformal threshold",
        "tap": tap,
        "components": list(names),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "precision": precision.tolist(),
        "threshold": threshold,
        "alpha": alpha,
        "fitted_scans": len(fit),
        "threshold_scans": len(held),
    }


def novelty(x: np.ndarray, section: dict[str, Any]) -> tuple[float, list[str]]:
    """The Mahalanobis score of a descriptor, and its components furthest from the reference (|z| > 4)."""
    mean, scale = np.asarray(section["mean"]), np.asarray(section["scale"])
    score = float(_distance(x, mean, np.asarray(section["precision"]), scale)[0])
    z = (x - mean) / scale
    worst = [i for i in np.argsort(-np.abs(z))[:3] if abs(z[i]) > 4]
    return score, [f"{section['components'][i]} (z = {z[i]:+.1f})" for i in worst]


def assess(volume: Volume, prediction: Prediction | None, package: ModelPackage) -> dict[str, Any]:
    """The verdict on one scan: ``within`` (bool), ``reasons``, and the novelty score and threshold when fitted.

    Args:
        volume: the input, raw intensities ``(k, j, i)`` on its grid (mm).
        prediction: its prediction with the :func:`novelty_tap` features (None: the card's rules only).
        package: the model.
    """
    card = package.card
    reasons = []
    low = float(np.quantile(volume.array[::2, ::2, ::2], 0.01))
    if card.modality.upper() == "CT" and low >= 0:
        reasons.append(
            f"the model is for CT in Hounsfield units, but 99 % of the voxels are {low:g} or more (no fat, no air): "
            "not a CT in HU (an MR image?)"
        )
    if card.modality.upper() == "MR" and low < AIR_HU:
        reasons.append(f"the model is for MR, but the scan has Hounsfield-like values below {AIR_HU:g}: a CT?")
    for axis, (spacing, target) in enumerate(zip(volume.geometry.spacing, card.target_spacing_mm, strict=True)):
        factor = max(spacing / target, target / spacing)
        if factor > MAX_RESAMPLING:
            reasons.append(
                f"voxels of {spacing:g} mm along axis {'ijk'[axis]}: over {MAX_RESAMPLING:g} times the model's "
                f"{target:g} mm"
            )
    verdict: dict[str, Any] = {"within": True, "reasons": reasons}
    section = card.extra.get("applicability")
    if section and prediction is not None:
        x, names = descriptor(volume, prediction, package)
        if list(names) != list(section["components"]):  # a sampled method: no single pass to read features from
            verdict.update(novelty=None, note="no novelty score: the method gives no single backbone pass")
        else:
            score, furthest = novelty(x, section)
            verdict.update(novelty=round(score, 3), threshold=round(float(section["threshold"]), 3))
            if score > section["threshold"]:
                detail = f"; furthest: {', '.join(furthest)}" if furthest else ""
                reasons.append(
                    f"unlike the scans the model was checked on (novelty {score:.1f} > {section['threshold']:.1f}"
                    f"{detail})"
                )
    verdict["within"] = not reasons
    return verdict


def fit_applicability(
    package: ModelPackage,
    cases: Sequence[Any],
    device: str = "auto",
    alpha: float = ALPHA,
    progress: Any = None,
) -> dict[str, Any]:
    """Fit the ``applicability`` section on reference scans (``cases``: anything with a ``volume``).

    The backbone runs once per scan (as ``predict`` runs it, without the head: the features do not
    depend on it). Returns the section; the caller writes it into the card.
    """
    from .inference import predict_volume, resolve_device
    from .model.backbones import load_backbone

    dev = resolve_device(device)
    network = load_backbone(package, dev)
    tap = novelty_tap(package)
    rows, names = [], []
    for done, case in enumerate(cases, start=1):
        prediction = predict_volume(case.volume, package, network=network, device=dev, taps=[tap] if tap else ())
        row, names = descriptor(case.volume, prediction, package)
        rows.append(row)
        if progress is not None:
            progress("applicability", done / len(cases))
    return fit_section(np.stack(rows), names, tap, alpha)
