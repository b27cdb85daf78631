"""Training patches drawn from whole cases.

Cut, padded, flipped and turned with numpy views, not MONAI's transforms: MONAI's ``SpatialCrop``,
``SpatialPad``, ``Flip`` and ``Rotate90``, given the same draws, give these patches to the bit but
copy at every step, 36 times the cost per 48^3 patch (``python benchmarks/monai_transforms.py``).
MONAI's ``RandCropByPosNegLabel`` centres the other patches on background voxels only, with no
jitter and no per-patch rater, so it is another sampler.
"""

from __future__ import annotations

import numpy as np
import torch


class PatchSampler:
    """Random training patches ``(B, 1, *patch)`` with one random rater's labels ``(B, 1, *patch)``.

    Args:
        images: ``(k, j, i)`` normalised images on the model grid.
        raters: per image, ``(R, k, j, i)`` label maps (pass ``majority[None]`` for one reference).
        patch: patch size ``(k, j, i)`` in voxels.
        foreground_fraction: share of patches centred (with +-8 voxels of jitter) on a foreground voxel.
        rng: the only source of randomness.
        augment: random flips, in-plane quarter turns and intensity jitter.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        raters: list[np.ndarray],
        patch: tuple[int, int, int],
        foreground_fraction: float,
        rng: np.random.Generator,
        augment: bool = True,
    ):
        self.images, self.raters, self.patch = images, raters, np.asarray(patch)
        self.foreground_fraction, self.rng, self.augment = foreground_fraction, rng, augment
        self.foreground = [np.argwhere(r.any(axis=0)) for r in raters]

    def _corner(self, index: int) -> np.ndarray:
        shape = np.asarray(self.images[index].shape)
        high = np.maximum(shape - self.patch, 0)
        fg = self.foreground[index]
        if len(fg) and self.rng.random() < self.foreground_fraction:
            centre = fg[self.rng.integers(len(fg))]
            corner = centre - self.patch // 2 + self.rng.integers(-8, 9, size=3)
            return np.clip(corner, 0, high)
        return np.array([self.rng.integers(0, h + 1) for h in high])

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(batch_size):
            index = int(self.rng.integers(len(self.images)))
            c = self._corner(index)
            window = tuple(slice(int(a), int(a + p)) for a, p in zip(c, self.patch, strict=True))
            image = self.images[index][window]
            label = self.raters[index][int(self.rng.integers(len(self.raters[index])))][window]
            image, label = pad_to(image, self.patch, float(image.min())), pad_to(label, self.patch, 0)
            if self.augment:
                image, label = self._augment(image, label)
            images.append(image)
            labels.append(label)
        x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        y = torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))
        return x, y

    def _augment(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for axis in range(3):
            if self.rng.random() < 0.5:
                image, label = np.flip(image, axis), np.flip(label, axis)
        turns = int(self.rng.integers(4))  # in-plane quarter turns (isotropic patches)
        image, label = np.rot90(image, turns, axes=(1, 2)), np.rot90(label, turns, axes=(1, 2))
        scale, shift = self.rng.uniform(0.9, 1.1), self.rng.normal(0.0, 0.1)
        image = image * scale + shift + self.rng.normal(0.0, self.rng.uniform(0.0, 0.1), image.shape)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def pad_to(array: np.ndarray, shape: np.ndarray, value: float) -> np.ndarray:
    pad = [(0, max(0, int(s) - n)) for n, s in zip(array.shape, shape, strict=True)]
    return np.pad(array, pad, constant_values=value) if any(p[1] for p in pad) else array


def centred_patch(
    image: np.ndarray, labels: np.ndarray, centre: np.ndarray, patch: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``patch``-sized window of ``image`` and ``labels`` ``(k, j, i)`` nearest to centred on ``centre``
    (kept inside the volume; padded with the image minimum and label 0 when the volume is smaller)."""
    size = np.asarray(patch)
    high = np.maximum(np.asarray(image.shape) - size, 0)
    corner = np.clip(np.asarray(centre) - size // 2, 0, high)
    window = tuple(slice(int(a), int(a + p)) for a, p in zip(corner, size, strict=True))
    return pad_to(image[window], size, float(image.min())), pad_to(labels[window], size, 0)
