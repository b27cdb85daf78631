"""Voxel uncertainty maps: from one probability map, and from several sampled predictions.

Sampled predictions come from MC dropout, test-time augmentation or a deep ensemble; the same
formulas serve all three (Malinin's set, streamed so that only running sums are kept).
"""

from __future__ import annotations

import numpy as np
import torch

from .methods import METHODS


def max_softmax_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c`` per voxel from ``(C, ...)`` probabilities; higher = more likely wrong."""
    return 1.0 - np.asarray(probabilities).max(axis=0)


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``-sum_c p_c log p_c`` (nats) per voxel from ``(C, ...)`` probabilities."""
    p = np.asarray(probabilities, np.float64)
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0)


SAMPLE_MAPS = METHODS["tta"].maps  # every sampling method writes these


class SampleStatistics:
    """Running sums over M sampled predictions ``p_m`` (each ``(C, ...)``), for the maps in :data:`SAMPLE_MAPS`.

    * ``entropy``: predictive entropy ``H[p_mean]`` (total uncertainty), nats;
    * ``expected_entropy``: ``E_m H[p_m]`` (the aleatoric part);
    * ``mutual_information``: ``H[p_mean] - E_m H[p_m]`` (the epistemic part, >= 0);
    * ``epkl``: expected pairwise KL divergence ``1/(M(M-1)) sum_{m != n} KL(p_m || p_n)``, computed as
      ``M/(M-1) (-sum_c p_mean,c E_m log p_m,c - E_m H[p_m])``. This is the pairwise form; the
      Shifts code omits the factor M/(M-1). Always >= the mutual information. NaN for M = 1.

    Memory: three ``(C, ...)``-sized sums and one ``(...)``-sized one, whatever M is.
    """

    def __init__(self) -> None:
        self.count = 0
        self.sum_p: torch.Tensor | None = None
        self.sum_log_p: torch.Tensor | None = None
        self.sum_entropy: torch.Tensor | None = None

    def add_logits(self, logits: torch.Tensor) -> None:
        """Add one sample given as ``(C, ...)`` logits (log-probabilities are exact, no clipping)."""
        log_p = torch.log_softmax(logits, dim=0)
        p = log_p.exp()
        entropy = -(p * log_p).sum(dim=0)
        if self.count == 0:
            self.sum_p, self.sum_log_p, self.sum_entropy = p, log_p, entropy
        else:
            self.sum_p += p
            self.sum_log_p += log_p
            self.sum_entropy += entropy
        self.count += 1

    def mean_probabilities(self) -> torch.Tensor:
        """``(C, ...)`` mean of the sampled probabilities (the method's prediction)."""
        if self.count == 0:
            raise ValueError("no samples added")
        return self.sum_p / self.count

    def maps(self) -> dict[str, torch.Tensor]:
        """The maps of :data:`SAMPLE_MAPS`, each ``(...)``, in nats."""
        mean = self.mean_probabilities()
        entropy = -(mean * torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))).sum(dim=0)
        expected_entropy = self.sum_entropy / self.count
        cross = -(mean * (self.sum_log_p / self.count)).sum(dim=0)
        m = self.count
        epkl = (cross - expected_entropy) * (m / (m - 1)) if m > 1 else torch.full_like(entropy, float("nan"))
        return {
            "entropy": entropy,
            "expected_entropy": expected_entropy,
            "mutual_information": (entropy - expected_entropy).clamp_min(0),
            "epkl": epkl.clamp_min(0),
        }
