"""The LIDC multi-rater data set: real 4-rater nodule masks with synthetic CT, cached on disk.

``prepare_lidc`` writes one compressed ``.npz`` per nodule into ``<cache>/lidc/cases/`` and an
``index.json`` beside it; ``load_cases`` reads them back. Patients are split once into
backbone-train / head-calibration / test; the split is fixed in ``lidc_split.json`` next to this
file, so every machine and every run uses the same patients for the same purpose.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fsutil import atomic_write
from ..progress import Progress
from ..volume import axis_aligned_geometry
from .cases import Case
from .lidc import ATTRIBUTION, Nodule, iter_nodules, rater_masks_1mm
from .synthetic_ct import synthesize_chest_ct

SPLITS = ("train", "calibration", "test")
SPLIT_FILE = Path(__file__).with_name("lidc_split.json")
DATASET_VERSION = 2  # bump when the rasterisation or the image recipe changes


def default_cache_dir() -> Path:
    """``$SEGUNCERTAINTY_CACHE`` or ``~/.cache/seguncertainty``."""
    return Path(os.environ.get("SEGUNCERTAINTY_CACHE", Path.home() / ".cache" / "seguncertainty"))


def make_split(
    patient_ids: Iterable[str], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, str]:
    """Assign patients to ``train`` / ``calibration`` / ``test`` at random (seeded), by patient."""
    patients = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.cumsum(np.asarray(fractions) / sum(fractions)) * len(patients)
    split = {}
    for rank, index in enumerate(order):
        split[patients[index]] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
    return split


def load_split() -> dict[str, str]:
    """Patient id -> split name, from the recorded ``lidc_split.json``."""
    return json.loads(SPLIT_FILE.read_text())["patients"]


def case_seed(seed: int, case_id: str) -> np.random.Generator:
    """Generator for one case, independent of the order in which cases are made."""
    return np.random.default_rng([seed, zlib.crc32(case_id.encode())])


def make_case(nodule: Nodule, split: str, seed: int) -> Case:
    """Rasterise a nodule's raters on 1 mm and synthesise its CT."""
    masks, origin = rater_masks_1mm(nodule)
    image = synthesize_chest_ct(masks.mean(axis=0), case_seed(seed, nodule.case_id))
    geometry = axis_aligned_geometry(masks.shape[1:], (1.0, 1.0, 1.0), tuple(origin))
    return Case(nodule.case_id, nodule.scan.patient_id, split, image, masks, geometry)


def _write_case(case: Case, path: Path) -> None:
    with atomic_write(path) as tmp:
        np.savez_compressed(
            tmp,
            image=case.image,
            raters=np.packbits(case.raters, axis=None),
            raters_shape=np.array(case.raters.shape),
            origin=np.array(case.geometry.origin),
        )


def _read_case(path: Path, entry: dict) -> Case:
    with np.load(path, allow_pickle=False) as data:
        shape = tuple(int(s) for s in data["raters_shape"])
        raters = np.unpackbits(data["raters"], count=int(np.prod(shape))).reshape(shape).astype(bool)
        geometry = axis_aligned_geometry(shape[1:], (1.0, 1.0, 1.0), tuple(data["origin"]))
        return Case(entry["case_id"], entry["patient_id"], entry["split"], data["image"], raters, geometry)


def dataset_dir(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "lidc"


def prepare_lidc(
    cache_dir: Path | None = None,
    splits: Iterable[str] = SPLITS,
    limit: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Write the LIDC multi-rater cases into ``<cache_dir>/lidc`` (resumable: finished cases are kept).

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`).
        splits: which splits to prepare.
        limit: at most this many cases per split (for quick runs and tests); all when None.
        seed: seed of the synthetic intensities.
        progress: receives stage ``"prepare-lidc"``.

    Returns:
        The data set folder (holding ``index.json`` and ``cases/``).
    """
    splits = tuple(splits)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise DataError(f"unknown split(s) {', '.join(sorted(unknown))}; known: {', '.join(SPLITS)}")
    root = dataset_dir(cache_dir)
    cases_dir = root / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    index_path = root / "index.json"
    old = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if old and (old.get("version"), old.get("seed")) != (DATASET_VERSION, seed):
        old = {}  # a different recipe or seed: remake every case
    entries = {e["case_id"]: e for e in old.get("cases", [])}
    patient_split = load_split()
    report = progress or Progress()
    counts = dict.fromkeys(splits, 0)
    expected = _expected_total(splits, limit)
    done = 0
    report("prepare-lidc", 0.0)
    for nodule in iter_nodules():
        split = patient_split.get(nodule.scan.patient_id)
        if split not in counts or (limit is not None and counts[split] >= limit):
            if limit is not None and all(n >= limit for n in counts.values()):
                break
            continue
        path = cases_dir / f"{nodule.case_id}.npz"
        if nodule.case_id not in entries or not path.is_file():
            case = make_case(nodule, split, seed)
            _write_case(case, path)
            entries[nodule.case_id] = {
                "case_id": case.case_id,
                "patient_id": case.patient_id,
                "split": split,
                "shape_kji": list(case.image.shape),
                "rater_voxels": [int(m.sum()) for m in case.raters],
            }
        counts[split] += 1
        done += 1
        report("prepare-lidc", min(done / expected, 1.0), nodule.case_id)
    index = {
        "version": DATASET_VERSION,
        "seed": seed,
        "attribution": ATTRIBUTION,
        "spacing_mm": [1.0, 1.0, 1.0],
        "cases": sorted(entries.values(), key=lambda e: e["case_id"]),
    }
    with atomic_write(index_path) as tmp:
        tmp.write_text(json.dumps(index, indent=1, allow_nan=False))
    report("prepare-lidc", 1.0, ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return root


def _expected_total(splits: tuple[str, ...], limit: int | None) -> int:
    # Case counts per split of the recorded split (896 four-rater nodules in all).
    totals = json.loads(SPLIT_FILE.read_text()).get("cases", {})
    return max(1, sum(min(totals.get(s, 1), limit) if limit is not None else totals.get(s, 1) for s in splits))


def read_index(cache_dir: Path | None = None) -> dict:
    """The prepared data set's ``index.json``."""
    path = dataset_dir(cache_dir) / "index.json"
    if not path.is_file():
        raise DataError(f"the LIDC data set is not prepared in {path.parent}; run: seguncertainty prepare-data lidc")
    return json.loads(path.read_text())


def iter_cases(split: str, cache_dir: Path | None = None, limit: int | None = None) -> Iterator[Case]:
    """Prepared cases of one split, in case-id order."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    root = dataset_dir(cache_dir)
    entries = [e for e in read_index(cache_dir)["cases"] if e["split"] == split]
    if not entries:
        raise DataError(f"no prepared {split} cases in {root}; run: seguncertainty prepare-data lidc --splits {split}")
    for entry in entries[:limit]:
        yield _read_case(root / "cases" / f"{entry['case_id']}.npz", entry)


def load_cases(split: str, cache_dir: Path | None = None, limit: int | None = None) -> list[Case]:
    """All prepared cases of one split (see :func:`iter_cases`)."""
    return list(iter_cases(split, cache_dir, limit))
