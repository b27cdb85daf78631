"""MONAI's transforms against the training patch sampler and the MRI corruptions: same output, and what it costs.

Two measurements, each run side by side in one process on seeded samples:

* **Patch sampler** (:class:`SegUncertaintyLib.patches.PatchSampler`): a variant that cuts, pads,
  flips and turns with MONAI's ``SpatialCrop``, ``SpatialPad``, ``Flip`` and ``Rotate90`` (the
  parameters drawn by the same generator) is compared to the bit with the sampler over
  ``--seeds`` seeds, and both are timed per 48^3 patch (alternating, medians).
* **Rician noise** (the last corruption of :func:`SegUncertaintyLib.data.mri_augment.augment_head`):
  ours, ``|x + n1 + i n2|`` with ``n ~ N(0, sigma)``, against MONAI's ``RandRicianNoise`` with the
  same ``sigma``, on the bundled ITK T1 head: the mean and standard deviation of the change inside
  the head, and the noise floor of the background (``sigma * sqrt(pi / 2)`` in theory), over seeds.
* **Bias field**: the peak-to-peak of the log-field, ours (fixed at ``2 * bias`` by construction)
  against MONAI's ``RandBiasField`` (degree 2, its coefficient range scaled to the same mean).

Usage::

    python benchmarks/monai_transforms.py [--seeds 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import numpy as np
from common import ROOT  # noqa: F401  first: puts the repository on the import path
from monai.transforms import Flip, RandBiasField, RandRicianNoise, Rotate90, SpatialCrop, SpatialPad

from SegUncertaintyLib.data.mri_augment import _bias_field
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.patches import PatchSampler
from SegUncertaintyLib.resources import sample_path


class MonaiSampler(PatchSampler):
    """The sampler with MONAI's crop, pad, flip and turn (the same draws from the same generator)."""

    def sample(self, batch_size: int):
        import torch

        images, labels = [], []
        for _ in range(batch_size):
            index = int(self.rng.integers(len(self.images)))
            c = self._corner(index)
            crop = SpatialCrop(roi_start=c, roi_end=c + self.patch)
            image = crop(self.images[index][None])
            label = crop(self.raters[index][int(self.rng.integers(len(self.raters[index])))][None])
            image = SpatialPad(self.patch, method="end", value=float(image.min()))(image)
            label = SpatialPad(self.patch, method="end", value=0)(label)
            if self.augment:
                for axis in range(3):
                    if self.rng.random() < 0.5:
                        image, label = Flip(spatial_axis=axis)(image), Flip(spatial_axis=axis)(label)
                turn = Rotate90(int(self.rng.integers(4)), spatial_axes=(1, 2))
                image, label = np.asarray(turn(image)), np.asarray(turn(label))
                scale, shift = self.rng.uniform(0.9, 1.1), self.rng.normal(0.0, 0.1)
                image = image * scale + shift + self.rng.normal(0.0, self.rng.uniform(0.0, 0.1), image.shape)
            images.append(np.asarray(image)[0])
            labels.append(np.asarray(label)[0])
        x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        y = torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))
        return x, y


def sampler_inputs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two cases, one smaller than a patch along k (so the pad is exercised), with 3 and 2 raters."""
    rng = np.random.default_rng(1)
    images = [rng.normal(size=(96, 96, 96)).astype(np.float32), rng.normal(size=(40, 110, 100)).astype(np.float32)]
    raters = [
        (rng.random((3, 96, 96, 96)) > 0.99).astype(np.uint8),
        (rng.random((2, 40, 110, 100)) > 0.99).astype(np.uint8),
    ]
    return images, raters


def compare_samplers(seeds: int, repeats: int) -> None:
    images, raters = sampler_inputs()
    digests = {}
    for kind in (PatchSampler, MonaiSampler):
        h = hashlib.sha256()
        for seed in range(seeds):
            for augment in (True, False):
                x, y = kind(images, raters, (48, 48, 48), 0.5, np.random.default_rng(seed), augment).sample(4)
                h.update(x.numpy().tobytes())
                h.update(y.numpy().tobytes())
        digests[kind.__name__] = h.hexdigest()
    same = digests["PatchSampler"] == digests["MonaiSampler"]
    times: dict[str, list[float]] = {"PatchSampler": [], "MonaiSampler": []}
    for repeat in range(repeats):
        for kind in (PatchSampler, MonaiSampler):
            sampler = kind(images, raters, (48, 48, 48), 0.5, np.random.default_rng(repeat))
            started = time.perf_counter()
            sampler.sample(16)
            times[kind.__name__].append((time.perf_counter() - started) / 16 * 1000)
    ours, theirs = (statistics.median(times[k]) for k in ("PatchSampler", "MonaiSampler"))
    print(f"patch sampler, {seeds} seeds x (augmented, plain) x 4 patches of 48^3: identical to the bit: {same}")
    print(f"  per patch: ours {ours:.2f} ms, MONAI's transforms {theirs:.2f} ms (ratio {theirs / ours:.1f})")


def rician_ours(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.hypot(image + rng.normal(0.0, sigma, image.shape), rng.normal(0.0, sigma, image.shape)).astype(np.float32)


def rician_monai(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = RandRicianNoise(prob=1.0, mean=0.0, std=sigma, sample_std=False)
    noise.set_random_state(seed=seed)
    return np.asarray(noise(image[None]))[0]


def compare_noise(seeds: int) -> None:
    head = read_volume(sample_path("itk-t1-head.nii.gz")).array.astype(np.float32)
    inside, background = head > np.percentile(head, 60), head == 0
    sigma = 0.03 * float(np.percentile(head, 99.5))
    rows = {"ours": [], "MONAI": []}
    times = {"ours": [], "MONAI": []}
    for seed in range(seeds):
        for name in rows:
            started = time.perf_counter()
            noisy = (
                rician_ours(head, sigma, np.random.default_rng(seed))
                if name == "ours"
                else rician_monai(head, sigma, seed)
            )
            times[name].append(time.perf_counter() - started)
            change = noisy - head
            rows[name].append((change[inside].mean(), change[inside].std(), noisy[background].mean()))
    print(f"\nRician noise on the ITK T1 head, sigma = {sigma:.2f} (3 % of the 99.5th percentile), {seeds} seeds:")
    floor = sigma * np.sqrt(np.pi / 2)
    print(f"| | mean change inside | SD of the change inside | background mean (theory {floor:.2f}) | s per volume |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        mean, sd, floor = np.mean(values, axis=0)
        print(f"| {name} | {mean:.3f} | {sd:.3f} | {floor:.3f} | {statistics.median(times[name]):.2f} |")


def compare_bias(seeds: int) -> None:
    shape, bias = (64, 64, 64), 0.35
    ours = [float(np.ptp(np.log(_bias_field(shape, np.random.default_rng(s), bias)))) for s in range(seeds)]
    field = RandBiasField(degree=2, coeff_range=(0.0, 0.1), prob=1.0)
    spread = []
    for s in range(seeds):
        field.set_random_state(seed=s)
        spread.append(float(np.ptp(np.log(np.asarray(field(np.ones((1, *shape), np.float32)))[0]))))
    scale = np.mean(ours) / np.mean(spread)  # MONAI's coefficient range scaled to our mean spread
    spread = [scale * v for v in spread]
    print(f"\nbias field log peak-to-peak over {seeds} seeds, 64^3 (ours: 2 x bias = {2 * bias:g} by construction):")
    print(
        f"  ours {np.min(ours):.3f} to {np.max(ours):.3f}; "
        f"MONAI's RandBiasField (degree 2, coefficients x{scale:.2f}): "
        f"{np.min(spread):.3f} to {np.max(spread):.3f} (CV {np.std(spread) / np.mean(spread):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    compare_samplers(args.seeds, args.repeats)
    compare_noise(min(args.seeds, 10))
    compare_bias(args.seeds)


if __name__ == "__main__":
    main()
