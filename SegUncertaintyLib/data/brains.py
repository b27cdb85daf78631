"""Labelled head MRIs that work offline: T1 images with a reference brain mask (brain extraction).

* ``mni152``: the MNI ICBM152 2009 T1 template at 1 mm with its brain mask (``nilearn`` wheel);
* ``itk-t1-head``: the ITK example T1 head and its skull strip (bundled sample; Apache-2.0, from
  Debian's ``insighttoolkit5-examples``);
* ``colin27``: the Colin27 T1 (``ch2``) and its brain (``ch2bet``) from Debian's ``mricron-data``,
  after ``seguncertainty prepare-data brains --mricron DIR`` copied them into the cache.

Three subjects: a data set for a brain-extraction head and a leave-one-subject-out evaluation, not
for a held-out split (every split holds every subject).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import DataError
from ..fsutil import atomic_write
from ..io import read_volume
from ..resources import sample_path
from .cases import Case
from .mni import load_mni152

COLIN27_FILES = {"ch2.nii.gz": "image.nii.gz", "ch2bet.nii.gz": "brain.nii.gz"}


def colin27_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "brains" / "colin27"


def prepare_brains(mricron_dir: Path, cache_dir: Path) -> Path:
    """Copy Colin27 (``ch2.nii.gz``, ``ch2bet.nii.gz`` from mricron-data's templates folder) into the cache.

    Raises:
        DataError: a file is missing or is not a readable volume.
    """
    target = colin27_dir(cache_dir)
    for name in COLIN27_FILES:
        if not (Path(mricron_dir) / name).is_file():
            raise DataError(
                f"{name} is not in {mricron_dir}; give mricron-data's templates folder "
                "(apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron: "
                "mricron/usr/share/mricron/templates)"
            )
        read_volume(Path(mricron_dir) / name)  # refuse a broken file before copying anything
    target.mkdir(parents=True, exist_ok=True)
    for name, stored in COLIN27_FILES.items():
        with atomic_write(target / stored) as staging:  # a stopped copy leaves no half file in the cache
            shutil.copyfile(Path(mricron_dir) / name, staging)
    return target


def _case(name: str, image: Path, brain: Path, split: str) -> Case:
    volume = read_volume(image)
    mask = read_volume(brain).array > 0
    return Case(name, name, split, volume.array, mask[None], volume.geometry)


def load_brain_cases(cache_dir: Path, split: str) -> list[Case]:
    """The labelled heads there are here (MNI152 and the ITK head always; Colin27 once prepared)."""
    mni = load_mni152(resolution=1)
    cases = [
        Case("mni152", "mni152", split, mni.t1.array, mni.brain_mask[None], mni.t1.geometry),
        _case("itk-t1-head", sample_path("itk-t1-head.nii.gz"), sample_path("itk-t1-head-brain.nii.gz"), split),
    ]
    colin = colin27_dir(cache_dir)
    if (colin / "image.nii.gz").is_file():
        cases.append(_case("colin27", colin / "image.nii.gz", colin / "brain.nii.gz", split))
    return cases
