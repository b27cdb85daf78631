"""Targets for a head trained without labels: where the backbone disagrees with itself.

A labelled head learns ``e = [argmax z != y]`` against a rater's ``y``. Without a label, ``y`` is
the frozen backbone's own prediction on a corrupted copy of the same input: flipped along a random
set of axes (and flipped back after the pass, as test-time augmentation does), with a random
contrast and brightness change, Gaussian noise and a blur, all drawn afresh at every training
step. In expectation over the draws, the error target is the probability that the voxel's label
flips under such perturbations, and the calibration map's NLL against these labels fits the
tempered probabilities to the backbone's perturbed predictive distribution. The head learns from
these draws what test-time augmentation measures with many passes, and gives it in one.
No label is read anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SegUncertaintyError


@dataclass(frozen=True)
class Corruptions:
    """How strong the perturbations are; each is drawn uniformly in ``[0, value]`` per sample.

    Intensities are the network's normalised ones (about zero mean and unit spread).

    Attributes:
        flip: flip along each axis with probability 1/2 (undone on the prediction).
        contrast: the intensities are scaled by ``1 + u``, ``u`` in ``[-contrast, contrast]``.
        brightness: a shift in ``[-brightness, brightness]``.
        noise: the standard deviation of additive Gaussian noise.
        blur: the Gaussian blur's sigma, in voxels.
    """

    # The defaults ranked LIDC's errors best among six settings, judged on the calibration split's
    # labels, which the label-free head never reads (BENCHMARKS.md, issue 21).
    flip: bool = True
    contrast: float = 0.35
    brightness: float = 0.3
    noise: float = 0.3
    blur: float = 1.25

    def __post_init__(self) -> None:
        strengths = {name: value for name, value in asdict(self).items() if name != "flip"}
        if any(not 0.0 <= value < (1.0 if name == "contrast" else math.inf) for name, value in strengths.items()):
            raise SegUncertaintyError(f"corruption strengths must be at least 0 (contrast below 1), got {strengths}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, text: str) -> Corruptions:
        """The defaults with the strengths named in ``text``, e.g. ``"noise=0.2,blur=1,flip=no"``."""
        values: dict[str, bool | float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = (piece.strip() for piece in item.partition("="))
            try:
                if name == "flip":
                    values[name] = {"yes": True, "no": False}[value.lower()]
                elif name in cls.__dataclass_fields__:
                    values[name] = float(value)
                else:
                    raise KeyError(name)
            except (KeyError, ValueError):
                raise SegUncertaintyError(
                    f"corruptions: {item!r} is not one of flip=yes|no, contrast=, brightness=, noise=, blur= "
                    "followed by a number"
                ) from None
        return cls(**values)


def _uniform(count: int, high: float, generator: torch.Generator, symmetric: bool = False) -> torch.Tensor:
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    return ((2.0 * u - 1.0) if symmetric else u).float() * high


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(1, 1, D, H, W)`` along its three spatial axes (edges replicated)."""
    if sigma < 0.05:
        return x
    radius = max(1, round(2.5 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(kernel)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    return x


def corrupt(
    x: torch.Tensor, corruptions: Corruptions, generator: torch.Generator
) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """A corrupted copy of a batch, and the spatial axes each sample was flipped along.

    Args:
        x: ``(B, 1, D, H, W)`` normalised images.
        corruptions: the strengths.
        generator: the only source of randomness (CPU).

    Returns:
        ``(B, 1, D, H, W)`` images and, per sample, the flipped dimensions of ``x`` (2, 3, 4).
    """
    batch = x.shape[0]
    flips = torch.rand(batch, 3, generator=generator) < (0.5 if corruptions.flip else 0.0)
    scale = 1.0 + _uniform(batch, corruptions.contrast, generator, symmetric=True)
    shift = _uniform(batch, corruptions.brightness, generator, symmetric=True)
    noise = _uniform(batch, corruptions.noise, generator)
    sigma = _uniform(batch, corruptions.blur, generator)
    out, axes = [], []
    for b in range(batch):
        sample = _blur(x[b : b + 1], float(sigma[b])) * float(scale[b]) + float(shift[b])
        sample = sample + float(noise[b]) * torch.randn(sample.shape, generator=generator).to(x.device)
        dims = tuple(2 + a for a in range(3) if flips[b, a])
        out.append(sample.flip(dims) if dims else sample)
        axes.append(dims)
    return torch.cat(out), axes


class SelfLabeller:
    """The frozen backbone's labels on corrupted copies: the training target in place of a rater's.

    With ensemble members (other backbones of the package, trained with the same recipe), each
    sample's corrupted copy is labelled by one network drawn from the backbone and its members, so
    that the target also holds where the members disagree with it.

    Args:
        backbone: the frozen network (eval mode).
        corruptions: the strengths.
        seed: seeds the only source of randomness (a CPU generator), so a run can be repeated.
        members: further frozen networks with the backbone's input and output.
    """

    def __init__(self, backbone: nn.Module, corruptions: Corruptions, seed: int, members: Sequence[nn.Module] = ()):
        self.networks, self.corruptions = [backbone, *members], corruptions
        self.generator = torch.Generator().manual_seed(seed)

    def reseeded(self, seed: int) -> SelfLabeller:
        """The same labeller with a generator of its own (for fixed validation targets)."""
        return SelfLabeller(self.networks[0], self.corruptions, seed, self.networks[1:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W)`` int64 labels of a corrupted copy of ``x`` ``(B, 1, D, H, W)``, flipped back onto ``x``."""
        corrupted, axes = corrupt(x, self.corruptions, self.generator)
        with torch.no_grad():
            if len(self.networks) == 1:
                labels = self.networks[0](corrupted).argmax(dim=1)
            else:
                chosen = torch.randint(len(self.networks), (len(x),), generator=self.generator)
                labels = torch.empty((len(x), *x.shape[2:]), dtype=torch.int64, device=x.device)
                for n, network in enumerate(self.networks):
                    picked = (chosen == n).nonzero().flatten().tolist()
                    if picked:
                        labels[picked] = network(corrupted[picked]).argmax(dim=1)
        return torch.stack(
            [label.flip([d - 2 for d in dims]) if dims else label for label, dims in zip(labels, axes, strict=True)]
        )
