"""Synthetic chest-CT intensities around real nodule outlines.

Lung parenchyma with smooth texture, a few blurred vessels, the nodule drawn through the raters'
frequency map with partial-volume blur, a point-spread blur and noise, in Hounsfield units. The
nodule's density follows the rater frequency, so the image is faint where raters disagree, which
is what makes a margin ambiguous on real CT. Deterministic given the random generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ChestCTRecipe:
    """Parameters of the synthetic image (HU, mm at 1 mm voxels)."""

    parenchyma_hu: float = -850.0
    texture_sigma_mm: float = 6.0
    texture_hu: float = 40.0
    vessels: tuple[int, int] = (2, 5)  # min, max count
    vessel_radius_mm: tuple[float, float] = (0.8, 2.5)
    vessel_blur_mm: tuple[float, float] = (0.8, 1.5)
    vessel_hu: float = 800.0  # above parenchyma
    nodule_hu: tuple[float, float] = (-100.0, 60.0)
    partial_volume_mm: float = 1.0
    psf_mm: float = 0.7
    noise_hu: float = 25.0


def _segment_distance(shape: tuple[int, int, int], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)
    ab = (b - a).astype(np.float32)
    t = np.clip(((grid - a) @ ab) / max(float(ab @ ab), 1e-6), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(grid - closest, axis=-1)


def synthesize_chest_ct(
    frequency: np.ndarray, rng: np.random.Generator, recipe: ChestCTRecipe = ChestCTRecipe()
) -> np.ndarray:
    """A chest-CT-like image around a nodule.

    Args:
        frequency: ``(k, j, i)`` rater frequency in ``[0, 1]`` (mean of the rater masks) on a 1 mm grid.
        rng: random generator (seed it for reproducible images).
        recipe: intensity model.

    Returns:
        ``(k, j, i)`` int16 image in HU.
    """
    shape = frequency.shape
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), recipe.texture_sigma_mm)
    texture *= recipe.texture_hu / max(float(texture.std()), 1e-6)
    image = recipe.parenchyma_hu + texture

    vessels = np.zeros(shape, dtype=np.float32)
    for _ in range(rng.integers(recipe.vessels[0], recipe.vessels[1] + 1)):
        start = rng.uniform(0, np.array(shape) - 1)
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        end = start + direction * rng.uniform(20.0, 60.0)
        radius = rng.uniform(*recipe.vessel_radius_mm)
        tube = (_segment_distance(shape, start, end) <= radius).astype(np.float32)
        vessels = np.maximum(vessels, ndimage.gaussian_filter(tube, rng.uniform(*recipe.vessel_blur_mm)))
    image += recipe.vessel_hu * vessels

    density = np.clip(ndimage.gaussian_filter(frequency.astype(np.float32), recipe.partial_volume_mm), 0.0, 1.0)
    nodule_hu = rng.uniform(*recipe.nodule_hu)
    image = image * (1.0 - density) + nodule_hu * density
    image = ndimage.gaussian_filter(image, recipe.psf_mm)
    image += rng.normal(0.0, recipe.noise_hu, shape).astype(np.float32)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16)
