"""Losses that train the SegWithU head (the seven terms of the published method, same weights).

The error label of a voxel is ``e = [argmax z != y]`` from the frozen, untempered logits (tempering
must not be able to change its own targets). Every term pools all voxels of the batch.

=========  ======  ===========================================================================
term       weight  what it does
=========  ======  ===========================================================================
nll        0.5     NLL of the tempered probabilities: trains the calibration map
ec         0.25    logistic regression of ``e`` on the standardised ranking map
pairwise   0.25    random (error, correct) pairs: the error voxel should rank higher
tail       0.25    soft error rate among the most confident voxels (raw ranking map, T = 0.25)
trust      0.05    keeps the deterministic perturbation and its effect on probabilities small
anchor     0.05    keeps the standardised ranking map near the standardised fixed anchor
residual   0.05    no perturbation energy on easy (high-margin) voxels
=========  ======  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import HeadOutputs, temper


@dataclass
class LossWeights:
    nll: float = 0.5
    ec: float = 0.25
    pairwise: float = 0.25
    tail: float = 0.25
    trust: float = 0.05
    anchor: float = 0.05
    residual: float = 0.05
    pairs: int = 65536
    tail_temperature: float = 0.25


def standardise(values: torch.Tensor) -> torch.Tensor:
    """``(u - mean) / (std + 1e-6)`` over every element (population std)."""
    return (values - values.mean()) / (values.std(unbiased=False) + 1e-6)


def error_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ...)`` float 1 where the frozen prediction differs from ``labels`` ``(B, ...)``."""
    return (logits.argmax(dim=1) != labels).unsqueeze(1).float()


def pairwise_ranking_loss(
    scores: torch.Tensor, errors: torch.Tensor, pairs: int, generator: torch.Generator
) -> torch.Tensor:
    """Mean ``softplus(score_correct - score_error)`` over random pairs (0 without both kinds)."""
    flat, e = scores.flatten(), errors.flatten() > 0.5
    positive, negative = flat[e], flat[~e]
    if len(positive) == 0 or len(negative) == 0:
        return flat.sum() * 0.0
    count = min(pairs, len(positive) * len(negative))
    i = torch.randint(len(positive), (count,), generator=generator).to(flat.device)
    j = torch.randint(len(negative), (count,), generator=generator).to(flat.device)
    return F.softplus(negative[j] - positive[i]).mean()


def head_loss(
    outputs: HeadOutputs,
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: LossWeights,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and each term's value.

    Args:
        outputs: head maps for the batch.
        logits: ``(B, C, D, H, W)`` frozen backbone logits.
        labels: ``(B, D, H, W)`` int64 reference labels.
        weights: term weights and settings.
        generator: draws the random pairs (seed it for reproducible training and validation).
    """
    errors = error_labels(logits, labels)
    ranking = outputs.ranking
    ranked = standardise(ranking)
    terms = {
        "nll": F.cross_entropy(temper(logits, outputs.calibration), labels),
        "ec": F.binary_cross_entropy_with_logits(ranked, errors),
        "pairwise": pairwise_ranking_loss(ranked, errors, weights.pairs, generator),
        "tail": (torch.softmax(-ranking.flatten() / weights.tail_temperature, dim=0) * errors.flatten()).sum(),
        "trust": outputs.delta.pow(2).mean()
        + 0.25 * (torch.softmax(logits + outputs.delta, dim=1) - torch.softmax(logits, dim=1)).pow(2).mean(),
        "anchor": F.smooth_l1_loss(ranked, standardise(outputs.anchor.detach())),
        "residual": ((1.0 - outputs.margin_weight).detach() * outputs.residual).mean(),
    }
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
