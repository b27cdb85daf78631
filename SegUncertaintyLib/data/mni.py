"""The MNI ICBM152 2009 template shipped inside the ``nilearn`` wheel (no download).

A real T1 MRI (population average, skull-stripped) with grey- and white-matter probability maps
and a brain mask: a real image with real soft labels for multi-class and MRI tests. Template:
Fonov et al., NeuroImage 2011 (McGill/MNI permissive notice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..volume import LPS_TO_RAS, Geometry, Volume

CLASSES = ("background", "csf", "gm", "wm")


def geometry_from_ras_affine(affine: np.ndarray, shape_ijk: tuple[int, int, int]) -> Geometry:
    """The :class:`Geometry` of a NIfTI-style ``ijk -> RAS`` affine (4x4) and an ``(i, j, k)`` shape."""
    ijk_to_lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)  # diag(-1,-1,1,1) is its own inverse
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return Geometry(
        shape=tuple(int(s) for s in shape_ijk[::-1]),
        spacing=tuple(spacing),
        origin=tuple(ijk_to_lps[:3, 3]),
        direction=tuple((linear / spacing).ravel()),
    )


@dataclass
class MNI152:
    """The template on one grid.

    Attributes:
        t1: T1 intensities, scaled to [0, 1] by nilearn.
        probabilities: ``(4, k, j, i)`` float32 probabilities of :data:`CLASSES`, summing to 1.
        brain_mask: ``(k, j, i)`` bool.
    """

    t1: Volume
    probabilities: np.ndarray
    brain_mask: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """``(k, j, i)`` uint8 most likely class (index into :data:`CLASSES`)."""
        return self.probabilities.argmax(axis=0).astype(np.uint8)


def load_mni152(resolution: int = 2) -> MNI152:
    """Load the MNI152 T1, GM/WM probability maps and brain mask at 1 or 2 mm.

    CSF is what the brain mask holds beyond GM and WM (nilearn ships no CSF map); background is
    outside the mask.
    """
    try:
        from nilearn import datasets
    except ImportError:
        raise DataError("the MNI152 template comes from nilearn: pip install nilearn") from None
    if resolution not in (1, 2):
        raise DataError(f"MNI152 resolution must be 1 or 2 mm, got {resolution}")
    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_template(resolution=resolution)
    wm = datasets.load_mni152_wm_template(resolution=resolution)
    mask = datasets.load_mni152_brain_mask(resolution=resolution)

    def kji(image: object) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(image.get_fdata(dtype=np.float32)).transpose(2, 1, 0))

    geometry = geometry_from_ras_affine(t1.affine, t1.shape)
    brain = kji(mask) > 0.5
    p_gm, p_wm = np.clip(kji(gm), 0, 1), np.clip(kji(wm), 0, 1)
    tissue = np.minimum(p_gm + p_wm, 1.0)
    scale = np.where(p_gm + p_wm > 1.0, 1.0 / np.maximum(p_gm + p_wm, 1e-6), 1.0)
    probabilities = np.stack(
        [
            (~brain).astype(np.float32) * (1.0 - tissue),
            brain * (1.0 - tissue),
            p_gm * scale,
            p_wm * scale,
        ]
    ).astype(np.float32)
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    return MNI152(Volume(kji(t1), geometry), probabilities, brain)
