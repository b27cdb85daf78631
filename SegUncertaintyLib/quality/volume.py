"""A structure's volume as a forecast: a mean and a spread in mL, scored by CRPS and coverage against raters.

The forecast is Gaussian. Its mean is the expected volume, the sum of the (calibrated) foreground
probabilities times the voxel volume. Its spread is either

* ``poisson-binomial``: every voxel an independent Bernoulli, ``sd = sqrt(sum p (1 - p))`` voxels:
  far too narrow, because neighbouring voxels are wrong together (kept as the textbook reference);
* ``level-set``: ``sd = scale * (V(p >= 0.25) - V(p >= 0.75)) / 2 + one voxel``, how far the volume
  moves when the boundary is drawn at a looser or a stricter level, with ``scale`` fitted on the
  head-calibration split to minimise the CRPS against the raters' volumes (:func:`fit_scale`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from ..metrics import gaussian_crps

LEVELS = (0.75, 0.25)
SLAB_VOXELS = 2**22  # float64 sums over a volume run slab by slab: a CT's copy would be 630 MB


def slabs(shape: Sequence[int], voxels: int = SLAB_VOXELS) -> list[tuple[slice, ...]]:
    """Index tuples cutting a ``(k, j, i)`` array into slabs of whole k-planes, about ``voxels`` each."""
    step = max(1, voxels // max(math.prod(shape[1:]), 1))
    return [(slice(start, start + step),) for start in range(0, shape[0], step)]


@dataclass(frozen=True)
class VolumeForecast:
    """A Gaussian forecast of one class's volume, mL."""

    mean_ml: float
    sd_ml: float

    def interval(self, coverage: float = 0.9) -> tuple[float, float]:
        """The central interval holding ``coverage`` of the forecast (lower end at least 0), mL."""
        half = float(ndtri(0.5 + coverage / 2.0)) * self.sd_ml
        return max(0.0, self.mean_ml - half), self.mean_ml + half

    def crps(self, observed_ml: float) -> float:
        """CRPS of the forecast for an observed volume (closed form for a Gaussian), mL; lower is better."""
        return float(gaussian_crps(observed_ml, self.mean_ml, self.sd_ml))


@dataclass(frozen=True)
class VolumeEvidence:
    """What a prediction says about one class's volume, mL: enough to forecast it with any spread."""

    mean_ml: float  # sum of the probabilities times the voxel volume
    half_width_ml: float  # (V(p >= 0.25) - V(p >= 0.75)) / 2
    poisson_sd_ml: float  # sqrt(sum p (1 - p)) voxels
    voxel_ml: float

    @classmethod
    def from_probability(cls, foreground: np.ndarray, voxel_ml: float) -> VolumeEvidence:
        """From a ``(k, j, i)`` probability of the class (calibrated when available) and the voxel volume."""
        total = binomial = 0.0
        for slab in slabs(foreground.shape):
            p = foreground[slab].astype(np.float64)
            total += float(p.sum())
            binomial += float((p * (1.0 - p)).sum())
        strict, loose = (np.count_nonzero(foreground >= level) for level in LEVELS)
        return cls(
            mean_ml=total * voxel_ml,
            half_width_ml=0.5 * float(loose - strict) * voxel_ml,
            poisson_sd_ml=math.sqrt(binomial) * voxel_ml,
            voxel_ml=voxel_ml,
        )

    @property
    def width_ml(self) -> float:
        """The level-set half-width plus one voxel, mL: the unit of the conformal interval."""
        return self.half_width_ml + self.voxel_ml

    def conformal_interval(self, scale: float) -> tuple[float, float]:
        """``mean +- scale * width`` (lower end at least 0), mL, with the conformal ``scale`` of
        :func:`..conformal.conformal_scale` (its coverage is the one it was fitted for)."""
        return max(0.0, self.mean_ml - scale * self.width_ml), self.mean_ml + scale * self.width_ml

    def forecast(self, scale: float | None = None) -> VolumeForecast:
        """The level-set forecast with a fitted ``scale``, or the Poisson-binomial one (None).

        One voxel is added to the spread: never a point forecast.
        """
        spread = self.poisson_sd_ml if scale is None else scale * self.half_width_ml
        return VolumeForecast(self.mean_ml, spread + self.voxel_ml)


def mean_crps(forecasts: Sequence[VolumeForecast], rater_volumes: Sequence[Sequence[float]]) -> float:
    """Mean over cases of the mean over raters of the CRPS, mL (every rater's score in one call)."""
    observed, mean, sd, weight = [], [], [], []
    for forecast, raters in zip(forecasts, rater_volumes, strict=True):
        observed += list(raters)
        mean += [forecast.mean_ml] * len(raters)
        sd += [forecast.sd_ml] * len(raters)
        weight += [1.0 / len(raters)] * len(raters)
    return float(np.dot(gaussian_crps(np.array(observed), np.array(mean), np.array(sd)), weight) / len(forecasts))


def coverage(
    forecasts: Sequence[VolumeForecast], rater_volumes: Sequence[Sequence[float]], level: float = 0.9
) -> float:
    """Share of the raters' volumes (all cases pooled) inside each forecast's ``level`` central interval."""
    return share_inside([f.interval(level) for f in forecasts], rater_volumes)


def share_inside(intervals: Sequence[tuple[float, float]], rater_volumes: Sequence[Sequence[float]]) -> float:
    """Share of the raters' volumes (all cases pooled) inside their case's ``(low, high)`` interval, mL."""
    inside = []
    for (low, high), raters in zip(intervals, rater_volumes, strict=True):
        inside += [low <= v <= high for v in raters]
    return float(np.mean(inside))


def fit_scale(evidence: Sequence[VolumeEvidence], rater_volumes: Sequence[Sequence[float]]) -> float:
    """The level-set scale with the lowest mean CRPS against the raters (log grid from 0.05 to 20)."""
    grid = np.geomspace(0.05, 20.0, 241)
    scores = [mean_crps([e.forecast(scale) for e in evidence], rater_volumes) for scale in grid]
    return float(grid[int(np.argmin(scores))])
