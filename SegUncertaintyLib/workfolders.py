"""The folders a front end keeps its runs in: one per run, unique, listed and removed on request.

Each run of the Slicer module gets its own folder under one base folder (Slicer's documents
folder / ``SegUncertainty``): the volume written for the command (``input.nrrd``), the command's
outputs (``outputs/``) and the review session (``review/``: every status and correction). Nothing
is removed behind the user's back except a run that did not finish (cancelled or failed); finished
runs, and with them their reviews, are removed only when the user asks (:func:`remove_run_folders`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .review.session import SESSION_FILE

REVIEW_FILE = Path("review") / SESSION_FILE


@dataclass(frozen=True)
class RunFolder:
    """One run's folder.

    Attributes:
        path: the folder.
        reviewed: a review session was started in it (its statuses and corrections would go with it).
        size_bytes: what it holds on disk, in bytes.
    """

    path: Path
    reviewed: bool
    size_bytes: int


def new_run_folder(base: str | os.PathLike, name: str) -> Path:
    """Make a new, empty folder for one run on the volume ``name`` under ``base``; never one that exists.

    The name is the volume's (letters, digits, ``_`` and ``-`` only), the date and time, and a
    random suffix, so two runs started within the same second get two folders.
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "volume"
    return Path(tempfile.mkdtemp(prefix=f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=base))


def run_folder(path: str | os.PathLike) -> RunFolder:
    """What a run's folder holds."""
    path = Path(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return RunFolder(path, (path / REVIEW_FILE).is_file(), size)


def list_run_folders(base: str | os.PathLike) -> list[RunFolder]:
    """The run folders under ``base``, oldest first (none if ``base`` does not exist)."""
    base = Path(base)
    if not base.is_dir():
        return []
    folders = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return [run_folder(p) for p in folders]


def remove_run_folder(path: str | os.PathLike | None) -> None:
    """Remove one run's folder and everything in it (nothing if it is None or gone)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def remove_run_folders(folders: list[RunFolder]) -> None:
    """Remove these run folders and everything in them."""
    for folder in folders:
        remove_run_folder(folder.path)
