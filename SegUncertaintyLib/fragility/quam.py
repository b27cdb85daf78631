"""The fragility search as QUAM-SM's published code does it: the whole network, for reference and comparison.

What follows the published method (HanaJebril/quam_sm, ``training/adversarial_training.py`` and
``uncertainty_quam.py``, with the settings of its ``evaluation_pipeline.py``):

* two adversaries per foreground class, trained one after the other, each a copy of the **whole
  network** with Adam (learning rate 5e-4);
* targets: the reference mask dilated (grow) or eroded (shrink) by three iterations of a 3-voxel
  cube, i.e. 3 voxels, whatever the spacing; an eroded voxel becomes background;
* each step: cross-entropy of the adversary on the test image against its target, plus
  ``c_k (L_batch - L_batch,ref - gamma)`` with an absolute slack gamma = 0.05 nats, on the next
  training batch of 4 (our replay patches, in turn), with ``c_k`` from the published linear schedule
  (:data:`.config.PENALTY`);
* a snapshot after each step, weighed ``softmax(-L_batch / T)`` over all snapshots with T = 1
  (``L_batch`` recorded before the step, as published); the reference is left out of the mixture;
* total, aleatoric and epistemic maps as the weighted mixture's entropy, mean entropy and their
  difference.

What a volume needs beyond a 2D image:

* the "test image" is one window per contour region (the region's box, grown to a multiple of the
  patch size), so the network sees the context it sees at inference;
* a snapshot's logits on the model grid are the reference's blended logits plus the change the
  adversary makes on its window (as in the fast search), so that an adversary equal to the
  reference flips nothing where sliding windows overlap;
* a voxel counts as fragile (and a snapshot as a sample) only for snapshots whose penalty is at most
  0 (the published "best sample" criterion); flip mass weighs every snapshot.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..inference import argmax_labels
from ..model.package import ModelPackage
from ..prediction import Prediction
from ..progress import Progress
from ..volume import Volume
from .config import QuamConfig
from .layout import Box, padding_before
from .replay import ReplaySet
from .search import FragilityResult, Mixture, padded_input, reference_maps
from .tail import batch_of_two
from .targets import adversary_name, band_regions


@dataclass
class _Window:
    """One contour region: its window on the padded model grid, the model-grid crop it resamples, and its goals."""

    window: Box  # padded coordinates, a multiple of the patch size
    crop: Box  # model-grid crop resampled onto the input grid
    crop_in_window: Box  # the same crop in window coordinates
    input_box: Box
    image: torch.Tensor  # (1, 1, *window)
    reference: torch.Tensor  # (1, C, *window) the reference network's logits on it
    targets: list[torch.Tensor]  # per adversary, (1, *window) int64
    mixture: Mixture


class QuamSearch:
    """The faithful search for one backbone, reusable over volumes (the replay losses are computed once).

    Args:
        package: the model package.
        network: its backbone, on ``device``; never modified (each adversary trains a copy).
        replay: the package's replay set (the training batches).
        config: the settings.
        device: where everything runs.
    """

    def __init__(
        self,
        package: ModelPackage,
        network: nn.Module,
        replay: ReplaySet,
        config: QuamConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        self.package, self.network, self.config = package, network.eval(), config or QuamConfig()
        self.device = torch.device(device)
        size = self.config.batch_size
        self.batches = [
            (replay.images[s : s + size].to(self.device), replay.labels[s : s + size].to(self.device))
            for s in range(0, len(replay.images), size)
        ]
        with torch.no_grad():
            self.batch_reference = [float(_mean_ce(network(x), y)) for x, y in self.batches]

    def run(
        self,
        volume: Volume,
        reference: Prediction,
        keep_sample_labels: bool = False,
        progress: Progress | None = None,
        normalised: np.ndarray | None = None,
    ) -> FragilityResult:
        """Search the adversaries for one volume; the same contract as :meth:`.search.FragilitySearch.run`."""
        started = time.perf_counter()
        report = progress or Progress()
        report("fragility", 0.0)
        config, card = self.config, self.package.card
        if reference.logits is None:
            raise ValueError("the fragility search needs the reference prediction's logits (predict_volume)")
        z0 = reference.logits.to(self.device)
        labels0 = argmax_labels(z0).cpu().numpy()
        present = [c for c in range(1, card.num_classes) if (labels0 == c).any()]
        names = [
            adversary_name(d, card.classes[c], config.iterations, "voxels") for c in present for d in ("grow", "shrink")
        ]
        maps = reference_maps(reference)
        samples = np.repeat(reference.labels[None], 1 + len(names), axis=0) if keep_sample_labels else None
        summary: dict[str, Any] = {"config": config.to_dict(), "adversaries": names}
        windows = self._windows(volume, reference, z0, labels0, present, normalised) if names else []
        if not windows:
            report("fragility", 1.0)
            summary.update(regions=0, snapshots=0, admissible_snapshots=0, fragile_voxels=0, fragile_volume_ml=0.0)
            summary["seconds"] = round(time.perf_counter() - started, 3)
            return FragilityResult(maps, samples, summary)

        z0 = z0.cpu()
        losses = np.zeros((config.steps, len(names)))
        admissible = np.zeros((config.steps, len(names)), bool)
        for m in range(len(names)):
            adversary = copy.deepcopy(self.network).train()  # as published; these backbones behave alike in both modes
            adversary.requires_grad_(True)
            optimizer = torch.optim.Adam(adversary.parameters(), lr=config.learning_rate)
            for step in range(config.steps):
                batch = step % len(self.batches)
                images, labels = self.batches[batch]
                fit, test = _losses(adversary, images, labels, windows, m)
                penalty = config.penalty_weight(step) * (fit - self.batch_reference[batch] - config.slack)
                optimizer.zero_grad(set_to_none=True)
                (test + penalty).backward()
                optimizer.step()
                losses[step, m], admissible[step, m] = fit.item(), penalty.item() <= 0
                with torch.no_grad():
                    for w in windows:
                        change = (adversary(batch_of_two(w.image))[:1] - w.reference)[0].cpu()
                        logits = z0[(slice(None), *w.crop)] + change[(slice(None), *w.crop_in_window)]
                        snapshot = reference.grid.crop_to_input(logits, w.crop, w.input_box)
                        # unnormalised softmax(-L / T): the mixture divides by the total weight
                        weight = float(np.exp(-losses[step, m] / config.temperature))
                        w.mixture.add(snapshot, weight, step + 1, m, bool(admissible[step, m]))
                report("fragility", (m * config.steps + step + 1) / (len(names) * config.steps))
            del adversary, optimizer

        for w in windows:
            w.mixture.paste(w.input_box, config.steps, maps, samples)
        fragile = int(maps["fragile"].sum())
        summary.update(
            regions=len(windows),
            windows=[[[s.start, s.stop] for s in w.window] for w in windows],  # on the padded model grid
            snapshots=int(losses.size),
            admissible_snapshots=int(admissible.sum()),
            admissible_per_adversary=admissible.sum(axis=0).tolist(),
            replay_loss_reference=[round(v, 6) for v in self.batch_reference],
            replay_loss_per_step=np.round(losses, 6).tolist(),  # (K, M), each on its step's batch
            fragile_voxels=fragile,
            fragile_volume_ml=round(fragile * reference.geometry.voxel_volume_ml, 4),
            seconds=round(time.perf_counter() - started, 3),
        )
        return FragilityResult(maps, samples, summary)

    def _windows(
        self,
        volume: Volume,
        reference: Prediction,
        z0: torch.Tensor,
        labels0: np.ndarray,
        present: list[int],
        normalised: np.ndarray | None,
    ) -> list[_Window]:
        """One window per contour region, with the reference's logits and every adversary's target on it."""
        card, config = self.package.card, self.config
        patch, model_shape = tuple(card.patch_size), tuple(z0.shape[1:])
        spacing = tuple(reference.model_geometry.spacing)
        # a ball this wide holds the cube's reach (iterations voxels along every axis and diagonal)
        radius = float(np.sqrt(3) * config.iterations * max(spacing)) + 1e-6
        boxes = band_regions(labels0, card.num_classes, radius, spacing, margin=1)
        padded = padded_input(volume, self.package, self.device, normalised, model_shape)
        # pad the high side to a multiple of the patch, so that every window fits
        extra = [-(-n // p) * p - n for n, p in zip(padded.shape[2:], patch, strict=True)]
        if any(extra):
            pad = [n for e in extra[::-1] for n in (0, e)]
            padded = torch.nn.functional.pad(padded, pad, value=float(padded.min()))
        before = padding_before(model_shape, patch)
        cube = np.ones((3, 3, 3), bool)
        windows = []
        for box in boxes:
            crop, input_box = reference.grid.region(box)
            window = _window_around(crop, before, padded.shape[2:], patch)
            image = padded[(slice(None), slice(None), *window)]
            with torch.no_grad():
                logits = self.network(batch_of_two(image))[:1]
            # the model grid's part of the window; -1 elsewhere (padding: no target there)
            model_part = tuple(
                slice(max(w.start - b, 0), min(w.stop - b, n))
                for w, b, n in zip(window, before, model_shape, strict=True)
            )
            labels = np.full(image.shape[2:], -1, np.int64)
            labels[_moved(model_part, window, before)] = labels0[model_part]
            targets = []
            for c in present:
                mask = labels == c
                grown = ndimage.binary_dilation(mask, cube, iterations=config.iterations)
                shrunk = ndimage.binary_erosion(mask, cube, iterations=config.iterations, border_value=1)
                for target in (np.where(grown & (labels >= 0), c, labels), np.where(mask & ~shrunk, 0, labels)):
                    targets.append(torch.from_numpy(target)[None].to(self.device))
            reference_logits = reference.grid.crop_to_input(z0[(slice(None), *crop)].cpu(), crop, input_box)
            windows.append(
                _Window(
                    window,
                    crop,
                    _moved(crop, window, before),
                    input_box,
                    image,
                    logits,
                    targets,
                    Mixture(reference_logits, len(targets), reference_weight=0.0),
                )
            )
        return windows


def _losses(
    adversary: nn.Module, images: torch.Tensor, labels: torch.Tensor, windows: list[_Window], m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adversary's mean CE on a replay batch and, averaged over the windows, on adversary ``m``'s targets.

    Windows of the patch size go through the network in the same batch as the replay patches: the
    norms are per sample, so this is exact, and it avoids the slow batch of one (see
    :func:`.tail.batch_of_two`).
    """
    if all(w.image.shape[2:] == images.shape[2:] for w in windows):
        out = adversary(torch.cat([images, *(w.image for w in windows)]))
        n = len(images)
        test = [_mean_ce(out[n + i : n + i + 1], w.targets[m]) for i, w in enumerate(windows)]
        return _mean_ce(out[:n], labels), sum(test) / len(windows)
    test = [_mean_ce(adversary(w.image), w.targets[m]) for w in windows]
    return _mean_ce(adversary(images), labels), sum(test) / len(windows)


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``(N, C, ...)`` logits against ``(N, ...)`` labels, label -1 left out."""
    return nn.functional.cross_entropy(logits, labels, ignore_index=-1)


def _moved(box: Box, window: Box, before: list[int]) -> Box:
    """A model-grid box in the coordinates of a window of the padded grid."""
    moved = zip(box, window, before, strict=True)
    return tuple(slice(s.start + b - w.start, s.stop + b - w.start) for s, w, b in moved)


def _window_around(crop: Box, before: list[int], padded: tuple[int, ...], patch: tuple[int, ...]) -> Box:
    """A window of the padded grid (each axis a multiple of the patch) holding ``crop`` (model-grid voxels),
    centred on it where the grid allows."""
    window = []
    for c, b, n, p in zip(crop, before, padded, patch, strict=True):
        lo, hi = c.start + b, c.stop + b
        size = min(-(-(hi - lo) // p) * p, n)
        start = min(max((lo + hi) // 2 - size // 2, 0), n - size)
        window.append(slice(start, start + size))
    return tuple(window)
