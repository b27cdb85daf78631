"""A replay set from the model's own predictions on unlabelled volumes, for models without labelled training data.

The replay set stands for "the data the model fits" in the search's constraint: an adversary stays
plausible while it fits these patches about as well as the reference. Without labels, the patches
are the model's own segmentation of the user's volumes, on the model grid. The constraint then
reads "the adversary still predicts what the model predicts on other scans", which keeps an
adversary from changing the model's behaviour elsewhere while it moves one contour. It cannot tell
where the model itself is wrong on those scans: with self-labels, the reference's replay loss is
its own confidence, not its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, SegUncertaintyError
from ..inference import argmax_labels, prepare_image
from ..io import read_volume
from ..model.package import REPLAY_FILE
from ..patches import centred_patch
from ..predictor import Predictor
from ..progress import Progress
from .replay import write_replay


def build_self_replay(
    predictor: Predictor,
    images: Sequence[Path],
    patches: int = 8,
    seed: int = 0,
    command: str = "",
    progress: Progress | None = None,
) -> dict:
    """Segment ``images`` with the predictor's backbone and store ``patches`` of them, with those labels, as replay.

    Volumes are drawn with ``seed`` and segmented until ``patches`` of them have a foreground; each
    gives a patch centred on its foreground's centroid. With fewer usable volumes than patches, they
    give further patches in turn, centred on foreground voxels drawn with ``seed``. A volume that
    cannot be read or has no foreground is left out and named in the card's entry; none usable is an
    error.

    Args:
        predictor: the package's predictor (its backbone segments; the package gets the replay set).
        images: volume files (any format ``predict`` reads).
        patches: how many patches (R).
        seed: which volumes are drawn, and which foreground voxels centre further patches.
        command: the command line, recorded in the card.
        progress: receives stage ``"replay"``.

    Returns:
        The card's new ``fragility.replay`` entry.
    """
    report = progress or Progress()
    package, card = predictor.package, predictor.package.card
    if patches < 1:
        raise SegUncertaintyError(f"--patches must be at least 1, got {patches}")
    rng = np.random.default_rng(seed)
    volumes, skipped = [], {}
    for n, index in enumerate(rng.permutation(len(images))):  # volumes drawn with the seed, until enough
        if len(volumes) == patches:
            break
        path = images[index]
        report("replay", n / len(images), path.name)
        try:
            volume = read_volume(path)
            prediction = predictor.predict(volume, "none")
            labels = argmax_labels(prediction.logits).cpu().numpy().astype(np.uint8)
            if not (labels > 0).any():
                skipped[path.name] = "nothing segmented"
                continue
            image, _ = prepare_image(volume, package, predictor.device, Progress(), predictor.normalised(volume))
            volumes.append((path.name, image[0].cpu().numpy(), labels))
        except SegUncertaintyError as exc:  # one unreadable volume never stops the others
            skipped[path.name] = str(exc)
    report("replay", 1.0)
    if not volumes:
        raise DataError(f"none of the {len(images)} volume(s) gives a replay patch: {skipped}")
    chosen, image_patches, label_patches = [], [], []
    for r in range(patches):
        name, image, labels = volumes[r % len(volumes)]
        foreground = np.argwhere(labels > 0)
        if r < len(volumes):
            centre = np.round(foreground.mean(axis=0)).astype(int)
        else:
            centre = foreground[rng.integers(len(foreground))]
        patch, label = centred_patch(image, labels, centre, tuple(card.patch_size))
        image_patches.append(patch)
        label_patches.append(label)
        chosen.append(name)
    entry = {
        "file": REPLAY_FILE,
        "patches": patches,
        "cases": chosen,
        "labels": "the model's own predictions (self-labelled, no reference labels)",
        "skipped": skipped,
        "seed": seed,
        "command": command,
    }
    return write_replay(package, image_patches, label_patches, entry)
