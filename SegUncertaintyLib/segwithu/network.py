"""The SegWithU uncertainty head: calibration and error-ranking maps from one backbone pass.

It reads the frozen backbone's logits ``z`` and a few decoder features, fuses the features into
``h``, and perturbs a virtual linear read-out of ``h`` along R rank-1 directions ("posterior
probes") with learned scales. How much the class probabilities move under those perturbations is
the epistemic map; with an aleatoric map read from ``h`` and the top-2 margin it gives a
calibration map ``U_cal`` (per-voxel temperature ``sqrt(1 + U_cal)``) and a ranking map ``U_rnk``
(higher = more likely wrong). Method: Fu et al., "SegWithU: Uncertainty as Perturbation Energy for
Single-Forward-Pass Risk-Aware Medical Image Segmentation", arXiv 2604.15271 (2026).

Differences from the published code, each on purpose:

* probe sign patterns are rows 1..R-1 of a Sylvester-Hadamard matrix (exactly +-1, zero-mean,
  mutually orthogonal), not signs of a DCT whose last row depends on float rounding;
* the ranking map has no constant offset: no loss can train one (they are all shift-invariant);
* ``R`` must be a power of two (Hadamard order);
* the features are mixed spatially one level below full resolution (:class:`MultiScaleFusion`),
  which keeps the head's cost near a third of a small backbone's on a CPU;
* with two classes the element-wise part runs on the logit difference
  (:meth:`SegWithUHead._two_classes`): the same maps to float rounding, at a third of the work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

SLAB_VOXELS = 2**18  # voxels per slab of SegWithUHead.maps (its temporaries: about 250 bytes each)


@dataclass
class HeadConfig:
    """Shape of the head. ``taps``: ``[{"name": submodule, "channels": n}]`` from the model card."""

    taps: list[dict]
    num_classes: int
    fusion_channels: int = 8
    probes: int = 8
    sigma_init: float = 0.1
    margin_gamma: float = 4.0

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError("the head needs a softmax backbone with at least 2 classes")
        if self.probes < 2 or self.probes & (self.probes - 1):
            raise ValueError(f"the number of probes must be a power of two >= 2, got {self.probes}")
        if not self.taps:
            raise ValueError("the head needs at least one feature tap")

    def to_dict(self) -> dict:
        return asdict(self)


def hadamard_patterns(order: int) -> torch.Tensor:
    """``(order - 1, order)`` rows 1.. of the Sylvester-Hadamard matrix: exact +-1, zero-mean, orthogonal."""
    matrix = torch.ones(1, 1)
    while matrix.shape[0] < order:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix[1:].clone()


@dataclass
class HeadOutputs:
    """Maps of one head pass, each ``(B, 1, D, H, W)`` unless noted.

    Attributes:
        epistemic: ``U_epi``, summed over classes of the variance of the class probabilities
            across the probe patterns (perturbation energy in probability space).
        aleatoric: ``U_ale`` >= 0, read from the fused features.
        calibration: ``U_cal`` >= 0; tempered logits are ``z / sqrt(1 + U_cal)``.
        ranking: ``U_rnk``; higher means more likely wrong.
        anchor: the fixed combination the ranking map is anchored to.
        residual: ``rho``, mean squared deterministic logit perturbation.
        margin: top-1 minus top-2 probability of the frozen logits.
        margin_weight: ``w = exp(-gamma * margin)`` (margin detached).
        entropy: entropy of ``softmax(z)`` in nats.
        delta: ``(B, C, D, H, W)`` deterministic logit perturbation (all probe coefficients 1).
    """

    epistemic: torch.Tensor
    aleatoric: torch.Tensor
    calibration: torch.Tensor
    ranking: torch.Tensor
    anchor: torch.Tensor
    residual: torch.Tensor
    margin: torch.Tensor
    margin_weight: torch.Tensor
    entropy: torch.Tensor
    delta: torch.Tensor


def temper(logits: torch.Tensor, calibration: torch.Tensor) -> torch.Tensor:
    """Calibrated logits ``z / sqrt(1 + U_cal)``: a positive per-voxel scale, so the argmax never changes.

    Args:
        logits: ``(B, C, ...)`` or ``(C, ...)`` logits.
        calibration: ``U_cal`` >= 0, broadcastable (``(B, 1, ...)`` or ``(1, ...)``).
    """
    return logits / torch.sqrt(1.0 + calibration.clamp_min(0.0))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The same tensor in channels-last memory order (a no-op when it already is).

    The head works channels-last: on a CPU, oneDNN's 1x1x1 convolutions and trilinear upsampling
    of few-channel 3D maps are 3-10 times faster that way than channels-first.
    """
    return x.contiguous(memory_format=torch.channels_last_3d)


class Pointwise(nn.Conv3d):
    """A 1x1x1 convolution run on channels-last input (same parameters as ``nn.Conv3d``)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(channels_last(x), self.weight, self.bias)


class MultiScaleFusion(nn.Module):
    """Fuse the tapped features into ``h`` at the finest tap's resolution.

    Each tap is projected to F channels (1x1x1). The coarser taps are resized to the
    second-finest resolution, concatenated and mixed there by a 3x3x3 conv + InstanceNorm + GELU;
    that context is upsampled (trilinear), added to the projected finest tap, and passed through a
    GELU. The published head runs two 3x3x3 convs and two norms at full resolution, which on a CPU
    costs as much as this whole backbone; here full resolution only sees a projection, an
    upsampling, a sum and a GELU.
    """

    def __init__(self, channels: Sequence[int], width: int):
        super().__init__()
        self.projections = nn.ModuleList(Pointwise(c, width, bias=False) for c in channels)
        coarse = max(len(channels) - 1, 1)
        self.context = nn.Sequential(
            nn.Conv3d(width * coarse, width, 3, padding=1, bias=False),
            nn.InstanceNorm3d(width, affine=True),
            nn.GELU(),
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        projected = sorted(
            (projection(feature) for projection, feature in zip(self.projections, features, strict=True)),
            key=lambda t: math.prod(t.shape[2:]),
        )
        fine, coarse = projected[-1], projected[:-1] or projected[-1:]
        size = coarse[-1].shape[2:]
        context = self.context(torch.cat([_resize(c, size) for c in coarse], dim=1))
        return F.gelu(fine + _resize(context, fine.shape[2:]))


def _resize(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(tensor.shape[2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=tuple(size), mode="trilinear", align_corners=False)


class SegWithUHead(nn.Module):
    """The head: ``forward(logits, features) -> HeadOutputs``; the backbone stays outside, frozen.

    For the engine it is a :class:`~SegUncertaintyLib.inference.WindowHead`: :meth:`maps` per
    window, :data:`HEAD_MAPS` blended, :meth:`calibrated_logits` on the input grid.
    """

    output_names = ("calibration", "ranking", "epistemic", "aleatoric")  # HEAD_MAPS: blended and written in this order

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        width, probes = config.fusion_channels, config.probes
        self.fusion = MultiScaleFusion([t["channels"] for t in config.taps], width)
        self.probes = Pointwise(width, probes, bias=False)  # A: probe responses v = A h
        self.probe_to_class = Pointwise(probes, config.num_classes, bias=False)  # U: class directions
        sigma = torch.full((probes,), config.sigma_init)
        self.sigma_raw = nn.Parameter(torch.log(torch.expm1(sigma)))  # softplus(raw) = sigma_init
        self.aleatoric = Pointwise(width, 1)
        self.calibration = Pointwise(3, 1)  # [log(1 + U_epi + rho), log(1 + U_ale), margin]
        self.rank_scale_raw = nn.Parameter(torch.ones(()))  # scale 1 + 0.1 tanh(a) of the anchor
        self.rank_weight_raw = nn.Parameter(torch.zeros(()))  # softplus(c) weight of the margin term
        self.register_buffer("patterns", hadamard_patterns(probes), persistent=False)

    @property
    def tap_names(self) -> list[str]:
        return [t["name"] for t in self.config.taps]

    def _delta(self, v: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Logit perturbations ``U diag(sigma) diag(eps) v`` for ``coefficients`` ``(S, R)`` -> ``(B, S, C, ...)``."""
        sigma = F.softplus(self.sigma_raw) + 1e-6
        weight = self.probe_to_class.weight.flatten(1)  # (C, R)
        combined = weight[None] * (coefficients * sigma)[:, None]  # (S, C, R)
        s, c, r = combined.shape
        out = F.conv3d(channels_last(v), combined.reshape(s * c, r, 1, 1, 1))  # (B, S*C, ...) channels-last
        return out.view(v.shape[0], s, c, *v.shape[2:])

    def forward(self, logits: torch.Tensor, features: Sequence[torch.Tensor]) -> HeadOutputs:
        """Maps for ``(B, C, D, H, W)`` frozen logits and the tapped features (coarse or fine, any order)."""
        return self._voxelwise(logits, _resize(self.fusion(features), logits.shape[2:]))

    def maps(
        self,
        logits: torch.Tensor,
        features: Sequence[torch.Tensor],
        names: Sequence[str] = (),
        slab_voxels: int = SLAB_VOXELS,
    ) -> dict[str, torch.Tensor]:
        """The maps ``names`` (default :data:`HEAD_MAPS`) of :meth:`forward`, ``(B, 1, D, H, W)`` each, no gradients.

        Everything after the fusion is voxel-wise, so it runs a slab of the last axis (W) at a time
        and only the asked-for maps are kept: its temporaries (about 250 bytes a voxel: the probe
        responses, the 2R perturbed logits and their softmax) stay at a slab's size instead of the
        window's (4 GB for deepbet's 256^3). Slabs of W, not D: PyTorch picks the kernel of a 1x1x1
        convolution from ``N * C * D * H`` (oneDNN above 20480, else its own), which differ in the
        last bit; slabs of W leave that product, and so every number, as one pass gives it.
        """
        names = list(names or HEAD_MAPS)
        with torch.no_grad():
            h = _resize(self.fusion(features), logits.shape[2:])
            width = logits.shape[-1]
            out = {name: logits.new_empty((logits.shape[0], 1, *logits.shape[2:])) for name in names}
            step = max(1, slab_voxels // max(math.prod(logits.shape[2:-1]), 1))
            for start in range(0, width, step):
                piece = (..., slice(start, start + step))
                # contiguous copies of the slab: strided views of a few columns are slow to work on
                outputs = self._voxelwise(logits[piece].contiguous(), channels_last(h[piece]))
                for name in names:
                    out[name][piece] = getattr(outputs, name)
                del outputs
        return out

    def calibrated_logits(self, logits: torch.Tensor, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(C, k, j, i)`` tempered logits (:func:`temper`) from the ``(k, j, i)`` ``calibration`` map in ``maps``."""
        return temper(logits, maps["calibration"][None])

    def _any_classes(self, logits: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The epistemic map, residual, deterministic perturbation ``(B, C, ...)``, top-2 margin and entropy
        of the probe responses ``v``, each ``(B, 1, ...)`` but the perturbation."""
        # the S sign patterns and the all-ones vector (the deterministic perturbation) in one pass
        deltas = self._delta(v, torch.cat([self.patterns, torch.ones_like(self.patterns[:1])]))
        perturbed, delta = deltas[:, :-1], deltas[:, -1]  # (B, S, C, ...), (B, C, ...)
        probabilities = torch.softmax(logits.unsqueeze(1) + perturbed, dim=2)
        # population variance over the patterns, summed over classes (E[p^2] - E[p]^2: a strided var is slow)
        mean = probabilities.mean(dim=1)
        variance = (probabilities * probabilities).mean(dim=1) - mean * mean
        epistemic = variance.clamp_min(0.0).sum(dim=1, keepdim=True)
        residual = delta.pow(2).mean(dim=1, keepdim=True)
        p = torch.softmax(logits, dim=1)
        top2 = p.topk(2, dim=1).values
        margin = top2[:, :1] - top2[:, 1:2]
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1, keepdim=True)
        return epistemic, residual, delta, margin, entropy

    def _two_classes(self, logits: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The general path's epistemic map, residual, deterministic perturbation, margin and entropy for
        two classes (:meth:`_any_classes`), from the logit difference alone: a softmax over two classes
        is the sigmoid of the difference, and both classes' probabilities vary alike over the patterns.
        Equal to the general path to float rounding, at about half its element-wise work.
        """
        sigma = F.softplus(self.sigma_raw) + 1e-6
        weight = self.probe_to_class.weight.flatten(1)  # (2, R)
        # the patterns' class-1-minus-class-0 perturbations, and both classes' all-ones one
        rows = torch.cat([(weight[1] - weight[0])[None] * (self.patterns * sigma), weight * sigma])
        out = F.conv3d(channels_last(v), rows.reshape(*rows.shape, 1, 1, 1))  # (B, S + 2, ...)
        patterns = self.patterns.shape[0]
        difference = logits[:, 1:2] - logits[:, :1]
        q = torch.sigmoid(difference + out[:, :patterns])  # class 1's probability under each pattern
        mean = q.mean(dim=1, keepdim=True)
        epistemic = 2.0 * ((q * q).mean(dim=1, keepdim=True) - mean * mean).clamp_min(0.0)
        delta = out[:, patterns:]
        residual = delta.pow(2).mean(dim=1, keepdim=True)
        p1 = torch.sigmoid(difference)
        margin = (2.0 * p1 - 1.0).abs()
        p0 = 1.0 - p1
        entropy = -(p0 * torch.log(p0.clamp_min(1e-12)) + p1 * torch.log(p1.clamp_min(1e-12)))
        return epistemic, residual, delta, margin, entropy

    def _voxelwise(self, logits: torch.Tensor, h: torch.Tensor) -> HeadOutputs:
        """:meth:`forward` from the fused features ``h`` on the logits' grid (voxel-wise from here on)."""
        v = self.probes(h)
        num_classes = logits.shape[1]
        path = self._two_classes if num_classes == 2 else self._any_classes
        epistemic, residual, delta, margin, entropy = path(logits, v)
        weight = torch.exp(-self.config.margin_gamma * margin.detach())

        aleatoric = F.softplus(self.aleatoric(h))
        calibration_inputs = torch.cat([torch.log1p(epistemic + residual), torch.log1p(aleatoric), margin], dim=1)
        calibration = F.softplus(self.calibration(calibration_inputs))
        anchor = (
            torch.log1p(epistemic)
            + 0.5 * torch.log1p(residual)
            + 0.25 * torch.log1p(calibration)
            + 0.25 * entropy / max(math.log(num_classes), 1.0)
            + weight
        )
        ranking = (1.0 + 0.1 * torch.tanh(self.rank_scale_raw)) * anchor + F.softplus(self.rank_weight_raw) * weight
        return HeadOutputs(
            epistemic=epistemic,
            aleatoric=aleatoric,
            calibration=calibration,
            ranking=ranking,
            anchor=anchor,
            residual=residual,
            margin=margin,
            margin_weight=weight,
            entropy=entropy,
            delta=delta,
        )


HEAD_MAPS = SegWithUHead.output_names
