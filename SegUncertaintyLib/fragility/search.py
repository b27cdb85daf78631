"""The fragility search: weight-space adversaries pushed to grow or shrink the contour (fast 3D QUAM-SM).

For a volume and its reference prediction (one ordinary inference):

1. grow and shrink targets at each radius for each foreground class (:mod:`.targets`); the band is
   where a target differs from the reference, the ROI its bounding box plus a margin;
2. the ROI is covered by tiles; for each tile the frozen trunk runs once on a window centred on it,
   and the inputs of the trainable tail (:mod:`.tail`) are kept; the replay set's are kept likewise;
3. M adversaries (copies of the tail, stacked, one ``vmap``-ed call) take K Adam steps on
   ``mean_band CE(p_m, t_m) + lambda mean_{ROI \\ band} CE(p_m, y0) + c_k max(L_R(m) - L_R,ref, 0)``;
4. after every step each adversary is a snapshot; it is admissible when its replay loss stays
   within the slack, ``L_R <= L_R,ref + gamma``, and weighs ``exp(-max(L_R - L_R,ref, 0) / T)``
   (:func:`snapshot_weights`); the reference is a snapshot of weight 1;
5. the snapshots' logits are ``z0 + (tail_m - tail_ref)`` (the change the adversary makes, added to
   the blended reference logits), resampled onto the input grid, and summarised there: mixture
   entropy (total), mean entropy (aleatoric), their difference (epistemic, mutual information), flip
   mass (weighted share of snapshots whose label differs from the reference's) and first flip.

Outside the ROI no adversary changes anything: total = aleatoric = entropy of the reference,
epistemic = 0, and no voxel flips.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..inference import argmax_labels, prepare_image
from ..methods import METHODS
from ..model.package import ModelPackage
from ..network_grid import NetworkGrid
from ..prediction import Prediction
from ..progress import Progress
from ..uncertainty import predictive_entropy
from ..volume import Volume
from .config import FragilityConfig
from .layout import Box, Tile, padding_before, reach_crop, shift, tiles_for
from .replay import ReplaySet
from .tail import Tail, batched_tail, crop_inputs, input_scale, stacked_parameters, tail_spec, trunk_pass
from .targets import Target, adversary_name, band_regions, make_targets

FRAGILITY_MAPS = METHODS["fragility"].maps


@dataclass
class FragilityResult:
    """What the search gives, on the input grid.

    Attributes:
        maps: ``(k, j, i)`` arrays named in :data:`FRAGILITY_MAPS`: ``fragility_total``,
            ``fragility_aleatoric`` and ``fragility_epistemic`` (float32, nats), ``flip_mass``
            (float32 in [0, 1]), ``first_flip`` (float32: ``1 - (k - 1) / K`` for the first step k at
            which an admissible snapshot flips the voxel, 0 if none does) and ``fragile`` (uint8 mask
            of the voxels some admissible snapshot labels differently from the reference).
        sample_labels: when asked for, ``(1 + M, k, j, i)`` uint8: the reference and, per adversary,
            its last admissible snapshot.
        summary: counts, losses and timings for ``summary.json``.
    """

    maps: dict[str, np.ndarray]
    sample_labels: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _TileData:
    """A tile and what every step needs: its tail (its window's statistics), inputs, reference output, goals."""

    tile: Tile
    tail: Tail
    inputs: list[torch.Tensor]
    base: torch.Tensor  # (1, C, *tile) tail output with the reference weights
    labels: torch.Tensor  # (M, *tile) int64 target labels
    bands: torch.Tensor  # (M, *tile) bool: voxels each adversary is asked to flip


@dataclass
class _Region:
    """A ROI box, its tiles, the box one voxel wider that is resampled, its logits there, the input-grid box."""

    roi: Box
    tiles: list[_TileData]
    resampled: Box
    logits: torch.Tensor  # (C, *resampled)
    input_box: Box
    mixture: Mixture


def padded_input(
    volume: Volume,
    package: ModelPackage,
    device: torch.device,
    normalised: np.ndarray | None,
    model_shape: tuple[int, ...],
) -> torch.Tensor:
    """The network's ``(1, 1, *padded)`` input on the model grid, padded as the sliding window pads an
    image smaller than a window (:func:`.layout.padding_before`, with the image minimum)."""
    patch = tuple(package.card.patch_size)
    image, _ = prepare_image(volume, package, device, Progress(), normalised)
    before = padding_before(model_shape, patch)
    pad = [
        n for b, s, p in zip(before[::-1], model_shape[::-1], patch[::-1], strict=True) for n in (b, max(p - s, 0) - b)
    ]
    return F.pad(image[None], pad, value=float(image.min())) if any(pad) else image[None]


def snapshot_weights(losses: np.ndarray, reference: float, temperature: float) -> np.ndarray:
    """Mixture weights of snapshots from their replay losses: ``exp(-max(L - L_ref, 0) / T)``, at most 1.

    A snapshot that fits the few replay patches better than the reference is not a better model
    (the reference is the optimum on the whole training set): it weighs as much as the reference,
    never more. Rewarding it (``exp(-(L - L_ref) / T)``) let a handful of grow snapshots, 18 % below
    the reference's replay loss, hold nearly all of the weight (BENCHMARKS.md, "Why the search was
    one-sided").

    Args:
        losses: replay losses of the snapshots (nats), any shape.
        reference: the reference model's replay loss (nats).
        temperature: T (nats).
    """
    return np.exp(-np.maximum(np.asarray(losses, np.float64) - reference, 0.0) / temperature)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-voxel CE of ``(M, C, ...)`` logits against ``(M, ...)`` int64 labels: ``(M, ...)``."""
    return -torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)


class FragilitySearch:
    """The search for one backbone, reusable over many volumes (the replay features are made once).

    Args:
        package: the model package (card: architecture, classes, patch size, spacing).
        network: its backbone, loaded, on ``device``; never modified.
        replay: the package's replay set (:func:`.replay.load_replay`).
        config: the search settings.
        device: where everything runs (the network's device).
    """

    def __init__(
        self,
        package: ModelPackage,
        network: nn.Module,
        replay: ReplaySet,
        config: FragilityConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        self.package, self.network, self.config = package, network.eval(), config or FragilityConfig()
        self.device = torch.device(device)
        architecture = package.card.architecture.get("name", "")
        self.spec = tail_spec(network, architecture, self.config.trainable, package.card.num_classes)
        self.tail = Tail(network, self.spec).to(self.device)
        patch = tuple(package.card.patch_size)
        batch = package.card.inference.sw_batch_size
        inputs = []
        for start in range(0, len(replay.images), batch):
            inputs.append(trunk_pass(network, self.spec, replay.images[start : start + batch].to(self.device))[1])
        inputs = [torch.cat(parts) for parts in zip(*inputs, strict=True)]
        self.replay_tail = copy.deepcopy(self.tail)
        self.replay_tail.record(*inputs)
        self.scale = input_scale(inputs, patch)
        crops, self.replay_valid, labels = [], [], []
        for p, f in zip(patch, self.scale, strict=True):
            edge = min(self.config.replay_crop, p)
            lo = (p - edge) // 2
            crop, valid = reach_crop(lo, lo + edge, p, self.spec.reach, f)
            crops.append(crop)
            self.replay_valid.append(valid)
            labels.append(slice(lo, lo + edge))
        self.replay_inputs = crop_inputs(inputs, crops, patch)
        self.replay_labels = replay.labels[(slice(None), *labels)].to(self.device)
        with torch.no_grad():
            self.replay_reference = float(self._replay_losses(self.replay_tail(*self.replay_inputs)[None]).item())

    def _replay_losses(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(M,)`` mean CE on the replay crops from ``(M, R, C, ...)`` tail outputs."""
        outputs = outputs[(slice(None), slice(None), slice(None), *self.replay_valid)]
        m, r = outputs.shape[:2]
        ce = cross_entropy(outputs.flatten(0, 1), self.replay_labels.repeat(m, *[1] * (self.replay_labels.dim() - 1)))
        return ce.reshape(m, r, -1).mean(dim=(1, 2))

    def run(
        self,
        volume: Volume,
        reference: Prediction,
        keep_sample_labels: bool = False,
        progress: Progress | None = None,
        normalised: np.ndarray | None = None,
    ) -> FragilityResult:
        """Search the adversaries for one volume.

        Args:
            volume: the input image, any grid.
            reference: the backbone's prediction of it (:func:`..inference.predict_volume`, with logits).
            keep_sample_labels: also return the reference's and each adversary's label map.
            progress: receives stage ``"fragility"``.
            normalised: the volume's ``(k, j, i)`` intensities normalised for the package, when already made.

        Returns:
            A :class:`FragilityResult` on the input grid.
        """
        started = time.perf_counter()
        report = progress or Progress()
        report("fragility", 0.0)
        config, card = self.config, self.package.card
        if reference.logits is None:
            raise ValueError("the fragility search needs the reference prediction's logits (predict_volume)")
        z0 = reference.logits.to(self.device)
        labels0 = argmax_labels(z0).cpu().numpy()
        spacing = tuple(reference.model_geometry.spacing)
        boxes = band_regions(labels0, card.num_classes, max(config.radii_mm), spacing, config.roi_margin_voxels)
        present = [c for c in range(1, card.num_classes) if (labels0 == c).any()]
        names = [
            adversary_name(direction, card.classes[c], r)
            for c in present
            for r in config.radii_mm
            for direction in ("grow", "shrink")
        ]
        goals = [
            make_targets(z0[(slice(None), *box)].cpu().numpy(), card.classes, config.radii_mm, spacing) for box in boxes
        ]
        names = [n for n in names if any(n in g and g[n].band.any() for g in goals)]
        maps = reference_maps(reference)
        samples = np.repeat(reference.labels[None], 1 + len(names), axis=0) if keep_sample_labels else None
        summary: dict[str, Any] = {
            "config": {
                **config.to_dict(),
                "trainable": self.spec.part,
                "learning_rate": config.step_size(self.spec.uniform),
            },
            "adversaries": names,
            "replay_loss_reference": round(self.replay_reference, 6),
            "trainable_modules": list(self.spec.modules),
        }
        if not names:
            report("fragility", 1.0)
            summary.update(regions=0, snapshots=0, admissible_snapshots=0, fragile_voxels=0, fragile_volume_ml=0.0)
            summary["seconds"] = round(time.perf_counter() - started, 3)
            return FragilityResult(maps, samples, summary)

        regions = self._regions(volume, reference, z0, boxes, goals, names, normalised)
        report("fragility", 1 / (config.steps + 2))
        history = self._optimise(regions, z0, reference.grid, len(names), report)

        for region in regions:
            region.mixture.paste(region.input_box, config.steps, maps, samples)
        bound = self.replay_reference + config.slack
        admissible = history <= bound
        fragile = int(maps["fragile"].sum())
        summary.update(
            regions=len(regions),
            tiles=sum(len(r.tiles) for r in regions),
            roi_model_grid=[[[s.start, s.stop] for s in r.roi] for r in regions],
            replay_loss_bound=round(bound, 6),
            snapshots=int(history.size),
            admissible_snapshots=int(admissible.sum()),
            admissible_per_adversary=admissible.sum(axis=0).tolist(),
            replay_loss_per_step=np.round(history, 6).tolist(),  # (K, M)
            fragile_voxels=fragile,
            fragile_volume_ml=round(fragile * reference.geometry.voxel_volume_ml, 4),
            seconds=round(time.perf_counter() - started, 3),
        )
        return FragilityResult(maps, samples, summary)

    def _regions(
        self,
        volume: Volume,
        reference: Prediction,
        z0: torch.Tensor,
        boxes: list[Box],
        goals: list[dict[str, Target]],
        names: list[str],
        normalised: np.ndarray | None,
    ) -> list[_Region]:
        """Run the trunk once per tile window and keep everything the steps need."""
        card = self.package.card
        patch, model_shape = tuple(card.patch_size), tuple(z0.shape[1:])
        padded = padded_input(volume, self.package, self.device, normalised, model_shape)
        regions = []
        for box, goal in zip(boxes, goals, strict=True):
            reference_labels = z0[(slice(None), *box)].argmax(dim=0).to(torch.int64).cpu()
            empty = torch.zeros(reference_labels.shape, dtype=torch.bool)
            labels = torch.stack(
                [torch.from_numpy(goal[n].labels).long() if n in goal else reference_labels for n in names]
            )
            bands = torch.stack([torch.from_numpy(goal[n].band) if n in goal else empty for n in names])
            tiles = []
            for tile in tiles_for(box, bands.any(dim=0).numpy(), model_shape, patch, self.spec.reach, self.scale):
                _, inputs = trunk_pass(self.network, self.spec, padded[(slice(None), slice(None), *tile.window)])
                tail = copy.deepcopy(self.tail)
                tail.record(*inputs)
                inputs = crop_inputs(inputs, tile.crop, patch)
                with torch.no_grad():
                    base = tail(*inputs)[(slice(None), slice(None), *tile.valid)]
                inside = (slice(None), *shift(tile.tile, box))
                tiles.append(
                    _TileData(tile, tail, inputs, base, labels[inside].to(self.device), bands[inside].to(self.device))
                )
            resampled, input_box = reference.grid.region(box)
            logits = z0[(slice(None), *resampled)]
            reference_logits = reference.grid.crop_to_input(logits, resampled, input_box)
            regions.append(_Region(box, tiles, resampled, logits, input_box, Mixture(reference_logits, len(names))))
        return regions

    def _optimise(
        self, regions: list[_Region], z0: torch.Tensor, grid: NetworkGrid, count: int, report: Progress
    ) -> np.ndarray:
        """K Adam steps of all adversaries at once; every step's snapshots go into the regions' mixtures.

        Returns:
            ``(K, M)`` replay loss of every snapshot.
        """
        config = self.config
        tiles = [t for r in regions for t in r.tiles]
        parameters = stacked_parameters(self.tail, count)
        optimizer = torch.optim.Adam(list(parameters.values()), lr=config.step_size(self.spec.uniform))
        band_voxels = sum(t.bands.flatten(1).sum(1) for t in tiles).clamp_min(1)
        anchor_voxels = sum((~t.bands).flatten(1).sum(1) for t in tiles).clamp_min(1)
        gamma = config.slack
        temperature = config.temperature or config.slack
        history = []
        for step in range(config.steps + 1):
            training = step < config.steps
            with torch.set_grad_enabled(training):
                band_loss = anchor_loss = 0.0
                deltas = []
                for t in tiles:
                    out = batched_tail(t.tail, parameters, t.inputs)[:, 0]
                    delta = out[(slice(None), slice(None), *t.tile.valid)] - t.base
                    ce = cross_entropy(z0[(slice(None), *t.tile.tile)].unsqueeze(0) + delta, t.labels)
                    band_loss = band_loss + (ce * t.bands).flatten(1).sum(1)
                    anchor_loss = anchor_loss + (ce * ~t.bands).flatten(1).sum(1)
                    deltas.append(delta.detach())
                replay = self._replay_losses(batched_tail(self.replay_tail, parameters, self.replay_inputs))
            if step > 0:  # the model after `step` updates is a snapshot
                losses = replay.detach().cpu().numpy()
                history.append(losses)
                weights = snapshot_weights(losses, self.replay_reference, temperature)
                admissible = np.flatnonzero(losses <= self.replay_reference + gamma)
                self._record(regions, tiles, deltas, admissible, weights, step, grid)
            if training:
                objective = band_loss / band_voxels + config.anchor_weight * anchor_loss / anchor_voxels
                # a hinge: fitting the replay set better than the reference earns nothing (see snapshot_weights)
                excess = (replay - self.replay_reference).clamp_min(0)
                objective = objective + config.penalty_weight(step) * excess
                optimizer.zero_grad(set_to_none=True)
                objective.sum().backward()
                optimizer.step()
            report("fragility", (step + 2) / (config.steps + 2))
        return np.array(history)

    @staticmethod
    def _record(
        regions: list[_Region],
        tiles: list[_TileData],
        deltas: list[torch.Tensor],
        admissible: np.ndarray,
        weights: np.ndarray,
        step: int,
        grid: NetworkGrid,
    ) -> None:
        """Add the admissible snapshots of one step to every region's mixture, on the input grid."""
        changes = dict(zip((id(t) for t in tiles), deltas, strict=True))
        for region in regions:
            delta = torch.zeros((len(weights), *region.logits.shape), device=region.logits.device)
            for t in region.tiles:
                delta[(slice(None), slice(None), *shift(t.tile.tile, region.resampled))] = changes[id(t)]
            for m in admissible:
                logits = grid.crop_to_input(region.logits + delta[m], region.resampled, region.input_box)
                region.mixture.add(logits, float(weights[m]), step, int(m))


class Mixture:
    """Running weighted sums over snapshots on an input-grid box.

    Args:
        reference_logits: ``(C, ...)`` the reference's logits on the box; flips are counted against its labels.
        adversaries: M, for the per-adversary last labels.
        reference_weight: the reference's own weight in the mixture (1 in the fast search; 0 where only
            the snapshots count, as in QUAM-SM).
    """

    def __init__(self, reference_logits: torch.Tensor, adversaries: int, reference_weight: float = 1.0):
        p = torch.softmax(reference_logits, dim=0)
        self.reference = reference_logits.argmax(dim=0)
        self.weight = reference_weight
        self.sum_p = reference_weight * p
        self.sum_entropy = reference_weight * _entropy(p)
        self.flip = torch.zeros_like(self.sum_entropy)
        self.fragile = torch.zeros(self.reference.shape, dtype=torch.bool, device=p.device)
        self.first = torch.zeros(self.reference.shape, dtype=torch.int64, device=p.device)
        self.last_labels = [self.reference.to(torch.uint8).cpu().numpy()] * adversaries

    def add(self, logits: torch.Tensor, weight: float, step: int, adversary: int, admissible: bool = True) -> None:
        """One snapshot's ``(C, ...)`` logits; only an admissible one marks voxels fragile and is a sample."""
        p = torch.softmax(logits, dim=0)
        labels = p.argmax(dim=0)
        flipped = labels != self.reference
        self.weight += weight
        self.sum_p += weight * p
        self.sum_entropy += weight * _entropy(p)
        self.flip += weight * flipped
        if admissible:
            self.fragile |= flipped
            self.first[flipped & (self.first == 0)] = step
            self.last_labels[adversary] = labels.to(torch.uint8).cpu().numpy()

    def maps(self, steps: int) -> dict[str, np.ndarray]:
        total = _entropy(self.sum_p / self.weight)
        aleatoric = self.sum_entropy / self.weight
        first = torch.where(self.first > 0, 1 - (self.first - 1) / steps, torch.zeros_like(total))
        arrays = {
            "fragility_total": total,
            "fragility_aleatoric": aleatoric,
            "fragility_epistemic": (total - aleatoric).clamp_min(0),
            "flip_mass": self.flip / self.weight,
            "first_flip": first,
            "fragile": self.fragile,
        }
        return {name: value.cpu().numpy() for name, value in arrays.items()}

    def paste(self, box: Box, steps: int, maps: dict[str, np.ndarray], samples: np.ndarray | None) -> None:
        """Write the maps into whole-volume ``maps`` and the last labels into ``samples[1:]``, at ``box``."""
        for name, values in self.maps(steps).items():
            maps[name][box] = values.astype(maps[name].dtype)
        if samples is not None:
            for m, labels in enumerate(self.last_labels):
                samples[1 + m][box] = labels


def reference_maps(reference: Prediction) -> dict[str, np.ndarray]:
    """The maps where no adversary changes anything: total = aleatoric = entropy of the reference."""
    entropy = predictive_entropy(reference.probabilities).astype(np.float32)
    return {
        "fragility_total": entropy,
        "fragility_aleatoric": entropy.copy(),
        "fragility_epistemic": np.zeros_like(entropy),
        "flip_mass": np.zeros_like(entropy),
        "first_flip": np.zeros_like(entropy),
        "fragile": np.zeros(entropy.shape, np.uint8),
    }


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=0)
