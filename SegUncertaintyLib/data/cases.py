"""A labelled case: an image and one label map per rater, on one grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics import majority_vote
from ..volume import Geometry, Volume


@dataclass
class Case:
    """An image with the label maps of its raters.

    Attributes:
        case_id: unique name of the case.
        patient_id: cases of one patient always share a split.
        split: ``train``, ``calibration`` or ``test``.
        image: ``(k, j, i)`` raw intensities (HU for CT).
        raters: ``(R, k, j, i)`` label maps, one per rater (bool for a single foreground class).
        geometry: the grid of ``image`` and ``raters``.
    """

    case_id: str
    patient_id: str
    split: str
    image: np.ndarray
    raters: np.ndarray
    geometry: Geometry

    @property
    def volume(self) -> Volume:
        return Volume(self.image.astype(np.float32), self.geometry)

    @property
    def frequency(self) -> np.ndarray:
        """``(k, j, i)`` float32 fraction of raters marking each voxel as foreground (any class > 0)."""
        return (self.raters > 0).mean(axis=0, dtype=np.float32)

    @property
    def majority(self) -> np.ndarray:
        """``(k, j, i)`` consensus labels, see :func:`SegUncertaintyLib.metrics.majority_vote`."""
        return majority_vote(self.raters)
