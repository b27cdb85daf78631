"""The replay set: a few training patches shipped in the model package, for the data-fit constraint.

An adversary may only count as a plausible model while it still fits the training data about as
well as the reference. The fit is measured on this fixed, non-augmented set (``replay.safetensors``:
normalised image patches of the model's patch size and their majority-vote labels), so the
reference loss is computed once per run and every adversary is judged on the same voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.cases import Case
from ..errors import DataError, ModelError
from ..fsutil import atomic_write
from ..model.backbones import sha256_of
from ..model.package import REPLAY_FILE, ModelPackage, replay_file, write_card
from ..patches import centred_patch
from ..preprocess import normalize_intensities


@dataclass
class ReplaySet:
    """Training patches on the model grid.

    Attributes:
        images: ``(R, 1, *patch)`` float32 normalised intensities (stored as float16).
        labels: ``(R, *patch)`` int64 majority-vote labels.
    """

    images: torch.Tensor
    labels: torch.Tensor


def has_replay(package: ModelPackage) -> bool:
    """True when the package carries a replay set."""
    return replay_file(package.card) is not None


def load_replay(package: ModelPackage) -> ReplaySet:
    """The package's replay set (checked against the card's SHA-256; nothing is unpickled)."""
    if not has_replay(package):
        raise ModelError(
            f"model {package.card.name!r} has no replay set for the fragility search; "
            "make one with: seguncertainty prepare-replay --model <package> "
            "(add --images <folder of scans> for a model without labelled training data)"
        )
    name = replay_file(package.card)
    path, expected = package.file(name), package.card.files.get(name)
    if not path.is_file() or (expected is not None and sha256_of(path) != expected):
        raise ModelError(f"replay set {path} is missing, corrupted or altered (its SHA-256 differs from the card)")
    try:
        tensors = load_file(str(path))
        images, labels = tensors["images"].float(), tensors["labels"].long()
    except (SafetensorError, OSError, KeyError) as exc:
        raise ModelError(f"cannot read replay set {path}: {exc}") from None
    expected = tuple(package.card.patch_size)
    if images.dim() != 5 or tuple(images.shape[2:]) != expected or tuple(labels.shape) != (len(images), *expected):
        raise ModelError(f"replay set {path} does not match the model's patch size {expected}")
    return ReplaySet(images, labels)


def build_replay(
    package: ModelPackage, cases: Sequence[Case], patches: int = 8, seed: int = 0, command: str = ""
) -> dict:
    """Draw ``patches`` training patches (one per case, centred on its foreground) and add them to the package.

    Args:
        package: the model package to extend (``replay.safetensors`` and the card's ``fragility`` section).
        cases: training cases with raters, on the model's grid.
        patches: how many patches (R).
        seed: which cases are drawn.
        command: the command line, recorded in the card.

    Returns:
        The card's new ``fragility.replay`` entry.
    """
    card = package.card
    usable = [c for c in cases if (c.majority > 0).any()]
    if len(usable) < patches:
        raise DataError(f"only {len(usable)} training cases with foreground for {patches} replay patches")
    for case in usable:
        if not np.allclose(case.geometry.spacing, card.target_spacing_mm, atol=1e-3):
            raise DataError(f"case {case.case_id} is not on the model's {card.target_spacing_mm} mm grid")
    chosen = sorted(np.random.default_rng(seed).choice(len(usable), size=patches, replace=False))
    images, labels = [], []
    for index in chosen:
        case = usable[index]
        centre = np.round(np.argwhere(case.majority > 0).mean(axis=0)).astype(int)
        image = normalize_intensities(case.image, card.normalization)
        patch, label = centred_patch(image, np.asarray(case.majority, np.uint8), centre, card.patch_size)
        images.append(patch)
        labels.append(label)
    entry = {
        "file": REPLAY_FILE,
        "patches": patches,
        "cases": [usable[i].case_id for i in chosen],
        "labels": "majority vote of the raters",
        "seed": seed,
        "command": command,
    }
    return write_replay(package, images, labels, entry)


def write_replay(
    package: ModelPackage, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], entry: dict
) -> dict:
    """Store ``(*patch)`` normalised image patches and their label patches as the package's replay set.

    ``entry`` (what the patches are and how they were made) becomes the card's ``fragility.replay``;
    the file's SHA-256 goes into the card's files. Returns ``entry``.
    """
    tensors = {
        "images": torch.from_numpy(np.stack(images)[:, None]).to(torch.float16).contiguous(),
        "labels": torch.from_numpy(np.stack(labels).astype(np.uint8)).contiguous(),
    }
    with atomic_write(package.file(REPLAY_FILE)) as tmp:
        save_file(tensors, str(tmp))
    card = package.card
    card.files[REPLAY_FILE] = sha256_of(package.file(REPLAY_FILE))
    card.extra["fragility"] = {**card.extra.get("fragility", {}), "replay": entry}
    write_card(card, package.path)
    return entry
