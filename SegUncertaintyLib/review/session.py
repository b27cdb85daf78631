"""A review session: each region's status, every correction kept as a new version, nothing ever overwritten.

The session lives in its own folder::

    review.json                      regions, status per region, the log, the current version
    corrections/segmentation_v001.nrrd, v002, ...   one label map per correction

The original segmentation is only read. Every change is written atomically (the label map first,
then ``review.json``), so a crash at any moment leaves the last saved state, which
:meth:`ReviewSession.load` reopens; it also removes the ``.partial`` files such a crash leaves.
``review.json`` is strict JSON (no NaN or Infinity).
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write, dumps_strict, is_partial_file, loads_strict
from ..io import read_volume, write_volume
from ..volume import Volume
from .regions import Region, remaining_risk

SESSION_FILE = "review.json"
CORRECTIONS = "corrections"
STATUSES = ("pending", "accepted", "corrected")


def remove_orphan_partials(folder: str | os.PathLike) -> list[str]:
    """Remove the ``.partial`` files interrupted writes left in a session folder and its corrections.

    Only the temporary files :func:`~..fsutil.atomic_write` makes are touched (``review.json`` and
    the corrections are written only through it), never anything else.

    Returns:
        The removed files, relative to ``folder``, sorted.
    """
    folder = Path(folder)
    removed = []
    for where, prefix in ((folder, ""), (folder / CORRECTIONS, f"{CORRECTIONS}/")):
        try:
            entries = list(where.iterdir())
        except OSError:
            continue
        for path in entries:
            if is_partial_file(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(prefix + path.name)
    return sorted(removed)


@dataclass
class ReviewSession:
    """The state of one reviewer's pass over one segmentation.

    Attributes:
        folder: where the session is kept.
        original: path of the segmentation under review (never written).
        regions: the high-risk regions, worst first.
        status: region label -> ``"pending"``, ``"accepted"`` or ``"corrected"``.
        log: one entry per action: time (ISO 8601, UTC), reviewer, region, action, voxels changed, file.
        version: number of corrections saved (0: the original is current).
        removed_partials: the orphan ``.partial`` files :meth:`load` removed (relative to ``folder``).
    """

    folder: Path
    original: Path
    regions: list[Region]
    status: dict[int, str] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    removed_partials: list[str] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def start(cls, folder: str | os.PathLike, original: str | os.PathLike, regions: list[Region]) -> ReviewSession:
        """A new session (every region pending), saved at once; an existing session in ``folder`` is refused."""
        folder = Path(folder)
        if (folder / SESSION_FILE).exists():
            raise InputError(f"{folder} already holds a review session; open it with ReviewSession.load")
        folder.mkdir(parents=True, exist_ok=True)
        session = cls(folder, Path(original).resolve(), list(regions), {r.label: "pending" for r in regions})
        session.save()
        return session

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ReviewSession:
        """Reopen a saved session (after a restart or a crash).

        The temporary ``.partial`` files of writes a crash interrupted (of ``review.json`` or of a
        correction) are removed; the saved state never refers to them.

        Raises:
            InputError: ``review.json`` is missing or damaged.
        """
        path = Path(folder) / SESSION_FILE
        try:
            data = loads_strict(path.read_text(encoding="utf-8"))
            session = cls(
                folder=Path(folder),
                original=Path(data["original"]),
                regions=[Region.from_dict(r) for r in data["regions"]],
                status={int(k): v for k, v in data["status"].items()},
                log=data["log"],
                version=int(data["version"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"cannot read the review session {path}: {exc}") from None
        session.removed_partials = remove_orphan_partials(session.folder)
        return session

    def save(self) -> None:
        """Write ``review.json`` atomically."""
        data = {
            "format": "seguncertainty-review/1",
            "original": str(self.original),
            "version": self.version,
            "current": self.current_path().name if self.version else None,
            "remaining_risk": self.remaining_risk(),
            "regions": [r.to_dict() for r in self.regions],
            "status": {str(k): v for k, v in self.status.items()},
            "log": self.log,
        }
        text = dumps_strict(data, SESSION_FILE) + "\n"
        with atomic_write(self.folder / SESSION_FILE) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def current_path(self) -> Path:
        """The current segmentation's file: the latest correction, or the original."""
        if self.version == 0:
            return self.original
        return self.folder / CORRECTIONS / f"segmentation_v{self.version:03d}.nrrd"

    def current(self) -> Volume:
        """The current segmentation."""
        return read_volume(self.current_path(), allow_constant=True)

    def remaining_risk(self) -> float:
        """Share of the expected wrong voxels in regions still pending, in [0, 1]."""
        return remaining_risk(self.regions, {label for label, s in self.status.items() if s != "pending"})

    def accept(self, label: int, reviewer: str | None = None) -> None:
        """Mark a region as reviewed and right as it is."""
        self._record(label, "accepted", reviewer, changed=0, file=None)

    def correct(self, label: int, labels: np.ndarray, reviewer: str | None = None) -> Path:
        """Keep a corrected segmentation as a new version and mark the region corrected.

        Args:
            label: the region the correction was made for.
            labels: ``(k, j, i)`` the whole corrected label map, on the segmentation's grid.
            reviewer: who made it (default: the login name).

        Returns:
            The new version's file.
        """
        self._check_region(label)
        current = self.current()
        labels = np.asarray(labels)
        if labels.shape != current.array.shape:
            raise InputError(f"corrected label map of shape {labels.shape} is not on the grid {current.array.shape}")
        changed = int((labels != current.array).sum())
        (self.folder / CORRECTIONS).mkdir(exist_ok=True)
        path = self.folder / CORRECTIONS / f"segmentation_v{self.version + 1:03d}.nrrd"
        write_volume(labels.astype(np.uint8), current.geometry, path)
        self.version += 1
        self._record(label, "corrected", reviewer, changed=changed, file=path.name)
        return path

    def next_pending(self, after: int | None = None) -> int | None:
        """The first pending region in rank order after region ``after`` (wrapping round), or None when all are done."""
        labels = [r.label for r in self.regions]
        start = labels.index(after) + 1 if after in labels else 0
        for label in labels[start:] + labels[:start]:
            if self.status[label] == "pending":
                return label
        return None

    def _check_region(self, label: int) -> None:
        if label not in self.status:
            raise InputError(f"no region {label} in this session (regions 1 to {len(self.regions)})")

    def _record(self, label: int, action: str, reviewer: str | None, changed: int, file: str | None) -> None:
        self._check_region(label)
        self.status[label] = action
        self.log.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "reviewer": reviewer or getpass.getuser(),
                "region": label,
                "action": action,
                "voxels_changed": changed,
                "file": file,
            }
        )
        self.save()
