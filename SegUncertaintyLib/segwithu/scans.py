"""The user's own scans as head training data: unlabelled volumes, and the corrections of review sessions.

A :class:`Scan` is an image on its own grid with either no label (the head then learns from the
backbone's disagreement with itself, :mod:`.self_targets`) or a reference label map: the
segmentation as the reviewer left it in a review session. A scan that cannot be read is left out
and named, never a reason to stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, SegUncertaintyError
from ..io import read_volume
from ..predict_folder import PredictFolder
from ..progress import Progress
from ..review.session import SESSION_FILE, ReviewSession
from ..volume import Geometry, Volume


@dataclass
class Scan:
    """One image for head training.

    Attributes:
        case_id: its name (the file's, or the review session folder's).
        patient_id: scans of one patient share the fit or the validation part (here: one per scan).
        image: ``(k, j, i)`` intensities as stored (HU for CT).
        geometry: the grid of ``image``.
        labels: ``(k, j, i)`` uint8 reference on that grid, or None for an unlabelled scan.
    """

    case_id: str
    patient_id: str
    image: np.ndarray
    geometry: Geometry
    labels: np.ndarray | None = None

    @property
    def volume(self) -> Volume:
        return Volume(self.image, self.geometry)

    @classmethod
    def of(cls, name: str, volume: Volume, labels: np.ndarray | None = None) -> Scan:
        """A scan of one patient, named ``name``."""
        return cls(name, name, volume.array, volume.geometry, labels)


def read_scans(folder: Path, progress: Progress | None = None) -> tuple[list[Scan], dict[str, str]]:
    """Unlabelled scans: the volume files and DICOM series in ``folder`` (as ``triage`` finds them).

    Returns:
        ``(scans, {name: why it was left out})``.
    """
    from ..triage import find_inputs  # the triage's rules for what a folder holds

    report = progress or Progress()
    inputs = find_inputs(folder)
    scans, skipped = [], {}
    for n, source in enumerate(inputs):
        report("load", n / len(inputs), source.full_name)
        try:
            scans.append(Scan.of(source.full_name, read_volume(source.path, series=source.series)))
        except SegUncertaintyError as exc:
            skipped[source.full_name] = str(exc)
    return _at_least_one(scans, skipped, f"{len(inputs)} volume(s) in {folder}")


def review_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds a review session, sorted."""
    if not root.is_dir():
        raise SegUncertaintyError(f"folder not found: {root}")
    return sorted(path.parent for path in root.rglob(SESSION_FILE))


def reviewed_scan(folder: Path) -> Scan:
    """The image of a review session and the segmentation as the reviewer left it.

    The image is the one the ``summary.json`` beside the reviewed segmentation names (its input).
    Only the flagged regions were looked at, so the rest of the segmentation stands as the model made it.

    Raises:
        DataError: nothing was reviewed yet, or the image or a file is missing or damaged.
    """
    session = ReviewSession.load(folder)
    if all(status == "pending" for status in session.status.values()):
        raise DataError("no region was reviewed yet")
    summary = PredictFolder.read(session.original.parent).summary  # the predict run that made the segmentation
    volume = read_volume(summary.input_path, series=summary.series)
    labels = session.current()
    if labels.array.shape != volume.array.shape:
        raise DataError(f"the segmentation {labels.array.shape} is not on the image's grid {volume.array.shape}")
    name = folder.parent.name if folder.name == "review" else folder.name  # a Slicer run keeps it in <run>/review
    return Scan.of(name, volume, np.asarray(labels.array, np.uint8))


def read_reviews(root: Path, progress: Progress | None = None) -> tuple[list[Scan], dict[str, str]]:
    """The reviewed scans of every review session under ``root``; ``(scans, {session: why it was left out})``."""
    report = progress or Progress()
    folders = review_folders(root)
    scans, skipped = [], {}
    for n, folder in enumerate(folders):
        report("load", n / max(len(folders), 1), folder.name)
        try:
            scans.append(reviewed_scan(folder))
        except SegUncertaintyError as exc:
            skipped[str(folder.relative_to(root))] = str(exc)
    return _at_least_one(scans, skipped, f"{len(folders)} review session(s) under {root}")


def _at_least_one(scans: list[Scan], skipped: dict[str, str], what: str) -> tuple[list[Scan], dict[str, str]]:
    if not scans:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or "none found"
        raise DataError(f"none of {what} can train the head ({reasons})")
    return scans, skipped
