"""Training data for a head on a whole-volume network (deepbet): crops of cached whole-volume passes.

A whole-volume network sees the entire (located, resized) head in one pass, so its logits and
features cannot be had for a patch alone. Each labelled head is therefore turned into a few new
acquisitions (:func:`~SegUncertaintyLib.data.mri_augment.augment_head`); the frozen network runs
once on each, exactly as at inference (locating network, axis order, resize), and its logits and
tapped features are kept in float16 with the reference mask brought onto the same grid. The head
then trains on random crops of those cached outputs, most of them centred on the mask's surface,
where a brain-extraction network's errors are. Crops start on multiples of the coarsest tap's
stride so that every feature map is cut at the same place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..data.cases import Case
from ..data.mri_augment import augment_head
from ..inference import labels_on_network_grid, prepare_image
from ..model.backbones import FeatureTaps
from ..model.package import ModelPackage
from ..progress import Progress
from ..roi import find_box
from ..volume import Volume
from .scans import Scan
from .self_targets import SelfLabeller


@dataclass
class NetworkView:
    """One head as the frozen network saw it, in the network's axis order.

    Attributes:
        logits: ``(C, D, H, W)`` float16.
        features: per tap, ``(C_f, d, h, w)`` float16 (coarser taps at their own scale).
        labels: ``(D, H, W)`` uint8 reference on the logits' grid.
        surface: ``(N, 3)`` int32 voxels on the reference's surface (crop centres).
    """

    logits: torch.Tensor
    features: list[torch.Tensor]
    labels: torch.Tensor
    surface: np.ndarray


def network_view(
    volume: Volume,
    labels: np.ndarray | None,
    package: ModelPackage,
    network: nn.Module,
    taps: Sequence[str],
    device: torch.device,
    labeller: SelfLabeller | None = None,
) -> NetworkView:
    """Run the frozen whole-volume network on ``volume`` as inference does and keep what the head needs.

    Args:
        volume: the image, any grid.
        labels: ``(k, j, i)`` reference label map on ``volume``'s grid, or None: ``labeller``'s instead.
        package: the model package (locating network, orientation, shape, normalisation).
        network: the frozen main network, on ``device``.
        taps: submodule names whose outputs the head reads.
        device: where the networks run.
        labeller: labels the view without a reference (the network on a corrupted copy, in its own grid).
    """
    box = find_box(volume, package, device)
    if box is not None:
        volume = Volume(volume.array[box], volume.geometry.cropped(box))
        labels = labels[box] if labels is not None else None
    image, grid = prepare_image(volume, package, device, Progress())
    with torch.no_grad(), FeatureTaps(network, taps) as hooks:
        logits = network(image[None])[0]
    if labels is not None:
        on_grid = labels_on_network_grid(labels, grid, package.card.num_classes, device)
    elif labeller is not None:
        on_grid = labeller(image[None])[0].to(torch.uint8)
    else:
        raise ValueError("a view needs labels or a labeller")
    labels_np = on_grid.cpu().numpy()
    surface = np.argwhere(labels_np != ndimage.grey_erosion(labels_np, size=3)).astype(np.int32)
    return NetworkView(
        logits=logits.half().cpu(),
        features=[hooks.features[name][0].half().cpu() for name in taps],
        labels=on_grid.cpu(),
        surface=surface,
    )


def augmented_views(
    cases: Sequence[Case | Scan],
    per_case: int,
    package: ModelPackage,
    network: nn.Module,
    taps: Sequence[str],
    device: torch.device,
    rng: np.random.Generator,
    progress: Progress | None = None,
    stage: str = "load",
    labeller: SelfLabeller | None = None,
) -> tuple[list[NetworkView], list[Case | Scan]]:
    """``per_case`` new acquisitions of every case, as views for training and as cases for evaluation.

    A labelled case's views carry its consensus (a scan's: its reference); an unlabelled scan's,
    ``labeller``'s labels.
    """
    views, acquired = [], []
    total = len(cases) * per_case
    for case in cases:
        reference = case.majority if isinstance(case, Case) else case.labels
        for n in range(per_case):
            mask = reference > 0 if reference is not None else np.zeros(case.image.shape, bool)
            image, mask = augment_head(case.image, mask, rng)
            name, labels = f"{case.case_id}-aug{n}", mask.astype(np.uint8) if reference is not None else None
            if isinstance(case, Case):
                acquired.append(Case(name, case.patient_id, case.split, image, mask[None], case.geometry))
            else:
                acquired.append(Scan(name, case.patient_id, image, case.geometry, labels))
            views.append(network_view(acquired[-1].volume, labels, package, network, taps, device, labeller))
            if progress is not None:
                progress(stage, len(views) / total, f"{case.case_id}: acquisition {n + 1} of {per_case}")
    return views, acquired


class CropSampler:
    """Random ``crop``-voxel cubes of cached views, ``surface_fraction`` of them centred on the reference's surface.

    Args:
        views: the cached network views.
        crop: edge of the cube in logits voxels (rounded down to a multiple of the coarsest stride).
        surface_fraction: share of crops centred (+-8 voxels) on a surface voxel.
        rng: the only source of randomness.
    """

    def __init__(self, views: Sequence[NetworkView], crop: int, surface_fraction: float, rng: np.random.Generator):
        self.views, self.rng, self.surface_fraction = list(views), rng, surface_fraction
        shape = self.views[0].logits.shape[1:]
        self.strides = [np.asarray(shape) // np.asarray(f.shape[1:]) for f in self.views[0].features]
        self.step = int(max(s.max() for s in self.strides))
        self.crop = max(self.step, crop - crop % self.step)

    def corner(self, view: NetworkView) -> np.ndarray:
        """A random crop corner in ``view`` (logits voxels, a multiple of the stride)."""
        shape = np.asarray(view.logits.shape[1:])
        high = np.maximum(shape - self.crop, 0)
        if len(view.surface) and self.rng.random() < self.surface_fraction:
            centre = view.surface[self.rng.integers(len(view.surface))] + self.rng.integers(-8, 9, size=3)
            corner = np.clip(centre - self.crop // 2, 0, high)
        else:
            corner = np.array([self.rng.integers(0, h + 1) for h in high])
        return corner - corner % self.step

    def cut(self, view: NetworkView, corner: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The crop at ``corner`` (logits voxels, a multiple of the stride): logits, features, labels."""
        window = tuple(slice(int(c), int(c) + self.crop) for c in corner)
        features = []
        for feature, stride in zip(view.features, self.strides, strict=True):
            coarse = (slice(w.start // s, w.stop // s) for w, s in zip(window, stride, strict=True))
            features.append(feature[(slice(None), *coarse)])
        return view.logits[(slice(None), *window)], features, view.labels[window]

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """A batch ``(B, C, c, c, c)`` float32 logits, per tap ``(B, C_f, ...)`` features, ``(B, c, c, c)`` labels."""
        crops = []
        for _ in range(batch_size):
            view = self.views[int(self.rng.integers(len(self.views)))]
            crops.append(self.cut(view, self.corner(view)))
        return stack_crops(crops, device)


def stack_crops(
    crops: Sequence[tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Batch crops (float16 -> float32, labels -> int64) on ``device``."""
    logits = torch.stack([c[0] for c in crops]).float().to(device)
    features = [torch.stack([c[1][n] for c in crops]).float().to(device) for n in range(len(crops[0][1]))]
    return logits, features, torch.stack([c[2] for c in crops]).long().to(device)
