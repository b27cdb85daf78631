"""Realistic MRI corruptions of a labelled head: what changes between scanners, sequences and sessions.

Used to train and test an uncertainty head for a pretrained MRI network on the few labelled heads
there are offline: each call draws a new acquisition of the same anatomy. In order:

* rotation: up to ``max_degrees`` about a random axis through the centre (image trilinear, mask
  trilinear then > 0.5, so both stay on the input grid);
* resolution: one random axis acquired 1.5-4x thicker (block average, then linear back);
* bias field: a smooth multiplicative field ``exp(b)``, ``b`` a random quadratic in the normalised
  coordinates with peak-to-peak about ``2 * bias`` (intensity non-uniformity of the receive coil);
* contrast: a gamma curve ``x^g``, ``g`` in [0.6, 1.6], on intensities scaled to [0, 1];
* noise: Rician, as magnitude images have it: ``|x + n1 + i n2|``, ``sigma`` 1-6 % of the 99th
  percentile (MONAI's ``RandRicianNoise``, seeded from the generator).

Each corruption is applied with probability ``probability``; the mask changes only with the rotation.

The other corruptions are written here because MONAI's nearest transforms do another job
(``python benchmarks/monai_transforms.py``, BENCHMARKS.md): ``RandBiasField`` draws its
coefficients from a range, so its field's strength varies from draw to draw (log peak-to-peak 0.38
to 1.00 where ours is 0.70 by construction); ``RandAffine`` and ``RandRotate`` draw an angle per
axis, not one rotation about a uniformly drawn axis; ``RandSimulateLowResolution`` zooms every axis
with nearest-neighbour down-sampling, where a thick-slice acquisition averages along one;
``AdjustContrast`` scales by the image's minimum and maximum, which one bright voxel moves, where
ours uses the 0.5 and 99.5th percentiles.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import RandRicianNoise
from scipy import ndimage
from scipy.spatial.transform import Rotation


def augment_head(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    max_degrees: float = 15.0,
    bias: float = 0.35,
    probability: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """A new acquisition of a labelled head.

    Args:
        image: ``(k, j, i)`` intensities (any scale, >= 0 for magnitude MRI).
        mask: ``(k, j, i)`` bool label on the same grid.
        rng: the only source of randomness.
        max_degrees: largest rotation angle.
        bias: half the peak-to-peak log-amplitude of the bias field.
        probability: chance of each corruption.

    Returns:
        ``(image, mask)``: float32 and bool arrays of the input shape (the input grid is unchanged).
    """
    image = image.astype(np.float32)
    mask = mask.astype(bool)
    low, high = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    if rng.random() < probability:
        image, mask = _rotate(image, mask, rng, max_degrees)
    if rng.random() < probability:
        image = _thick_slices(image, rng)
    if rng.random() < probability:
        image = image * _bias_field(image.shape, rng, bias)
    if rng.random() < probability:
        scaled = np.clip((image - low) / max(high - low, 1e-6), 0.0, None)
        image = (scaled ** rng.uniform(0.6, 1.6)) * (high - low) + low
    if rng.random() < probability:
        noise = RandRicianNoise(prob=1.0, mean=0.0, std=rng.uniform(0.01, 0.06) * high, sample_std=False)
        noise.set_random_state(seed=int(rng.integers(2**31)))
        image = np.asarray(noise(image.astype(np.float32)[None]))[0]
    return image.astype(np.float32), mask


def _rotate(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, max_degrees: float
) -> tuple[np.ndarray, np.ndarray]:
    axis = rng.normal(size=3)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    matrix = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
    centre = (np.asarray(image.shape) - 1) / 2.0
    offset = centre - matrix @ centre

    def turn(values: np.ndarray, fill: float) -> np.ndarray:
        return ndimage.affine_transform(values, matrix, offset, order=1, mode="constant", cval=fill)

    return turn(image, float(image.min())), turn(mask.astype(np.float32), 0.0) > 0.5


def _thick_slices(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    axis = int(rng.integers(3))
    factor = rng.uniform(1.5, 4.0)
    zoom = [1.0, 1.0, 1.0]
    zoom[axis] = 1.0 / factor
    thick = ndimage.zoom(ndimage.uniform_filter1d(image, max(1, round(factor)), axis=axis), zoom, order=1)
    back = [n / t for n, t in zip(image.shape, thick.shape, strict=True)]
    restored = ndimage.zoom(thick, back, order=1)
    out = np.empty_like(image)  # zoom can be off by a voxel; copy what overlaps, pad with the edge
    pad = [(0, max(0, n - t)) for n, t in zip(image.shape, restored.shape, strict=True)]
    out[...] = np.pad(restored, pad, mode="edge")[tuple(slice(0, n) for n in image.shape)]
    return out


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    grids = np.meshgrid(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape), indexing="ij")
    terms = [*grids, *(a * b for n, a in enumerate(grids) for b in grids[n:])]  # linear and quadratic
    field = sum(rng.normal() * term for term in terms)
    field = field * (2.0 * strength / max(float(field.max() - field.min()), 1e-6))
    return np.exp(field - field.mean())
