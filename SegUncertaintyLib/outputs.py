"""An output folder whose result set appears whole or not at all, and replaces the previous one.

One run at a time writes into a folder: :class:`StagedOutput` holds the folder's
:class:`~.fsutil.FolderLock` from start to end, so a second run into it is refused with a message
(never two writers, the last silently winning). With the lock held it removes what killed runs left
(hidden ``.staging-*`` folders, ``.partial`` files: no live run can own them).

Files are written into a hidden staging folder inside the output folder (same file system, so the
final move is a rename). ``commit`` then replaces the folder's whole result set: the previous
``summary.json`` goes first (a folder without one is not a finished result), the files of the
earlier run that the new run does not write are removed (only files a seguncertainty run wrote:
those its ``summary.json`` listed, and :data:`KNOWN_NAMES`; never anything else), the new files
move in, and ``summary.json`` comes last. Any failure or cancellation before ``commit`` removes the
staging folder and leaves the output folder as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import OutputError
from .fsutil import LOCK_FILE, FolderLock, atomic_write, dumps_strict, loads_strict, make_folder, remove_debris

SUMMARY_FILE = "summary.json"
# written beside a result set by ``report`` and ``triage``: part of the result set they describe
KNOWN_NAMES = ("report.html", "thumbnail.png", "failed.json")
# the files of the result set being replaced, kept while ``commit`` runs (a killed commit leaves it for the next)
REPLACING_FILE = ".seguncertainty-replacing.json"


def listed_files(summary: Any) -> set[str]:
    """The plain file names a seguncertainty ``summary.json`` lists (its ``outputs`` and ``files`` sections).

    Anything that is not a plain, visible file name (a path, ``..``, a hidden name) is ignored, and so is
    a summary that is not recognisably seguncertainty's (``predict``'s has ``"tool": "seguncertainty"``,
    ``evaluate``'s its ``files``, ``methods`` and ``scores``).
    """
    if not isinstance(summary, dict):
        return set()
    ours = summary.get("tool") == "seguncertainty" or {"files", "methods", "scores"} <= summary.keys()
    if not ours:
        return set()
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value and Path(value).name == value and not value.startswith(".") and value != SUMMARY_FILE:
                names.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(summary.get("outputs"))
    walk(summary.get("files"))
    return names


def _read_json(path: Path) -> Any:
    try:
        return loads_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


class StagedOutput:
    """Context manager staging the files of one run (holding the folder's lock throughout).

    Usage::

        with StagedOutput(out_dir) as out:
            write_volume(seg, geom, out.stage("segmentation.nrrd"))
            removed = out.commit(summary)   # moves the files, writes summary.json, removes the old run's

    Attributes:
        directory: the output folder.
        debris: names of what killed runs had left there, removed on entry.
        removed: after ``commit``, the files of the earlier run that were removed (sorted).
        committed: whether ``commit`` succeeded.

    Raises:
        OutputError: the folder cannot be written, or another run is writing into it.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._created = not self.directory.exists()
        self._names: list[str] = []
        self.committed = False
        self.removed: list[str] = []
        make_folder(self.directory)
        self._lock = FolderLock(self.directory)
        try:
            self._lock.acquire()
        except OutputError:
            self._remove_if_created()
            raise
        try:
            self.debris = remove_debris(self.directory)
            self._staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.directory))
        except BaseException as exc:  # a cancel or any error here too: the lock is never left held
            self._lock.release()
            self._remove_if_created()
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write into output folder {self.directory}: {exc.strerror}") from None
            raise

    @property
    def summary_path(self) -> Path:
        """Where ``summary.json`` is (written last by :meth:`commit`)."""
        return self.directory / SUMMARY_FILE

    def stage(self, name: str) -> Path:
        """Path in the staging folder for the output file ``name`` (a plain, visible file name)."""
        if Path(name).name != name or name in (SUMMARY_FILE, LOCK_FILE) or name.startswith("."):
            raise ValueError(f"invalid output name {name!r}")
        self._names.append(name)
        return self._staging / name

    def previous_files(self) -> set[str]:
        """The files of the result set now in the folder, which :meth:`commit` replaces (those present)."""
        names: set[str] = set()
        summary = _read_json(self.summary_path)
        if listed_files(summary):
            names |= listed_files(summary) | set(KNOWN_NAMES)
        record = _read_json(self.directory / REPLACING_FILE)  # a commit that was killed
        if isinstance(record, dict) and isinstance(record.get("files"), list):
            names |= {n for n in record["files"] if isinstance(n, str) and Path(n).name == n}
        return {n for n in names if _is_file(self.directory / n)}

    def commit(self, summary: dict[str, Any]) -> list[str]:
        """Replace the folder's result set by the staged files and ``summary`` (strict JSON).

        Returns:
            The files of the earlier result set that were removed because this run does not write
            them (also in :attr:`removed`).

        Raises:
            SegUncertaintyError: ``summary`` holds NaN or Infinity (nothing is changed).
            OutputError: the folder cannot be written.
        """
        text = dumps_strict(summary, SUMMARY_FILE) + "\n"  # before anything in the folder changes
        keep = set(self._names) | listed_files(summary)
        record = self.directory / REPLACING_FILE
        try:
            previous = self.previous_files()
            stale = sorted(previous - keep)
            if previous:
                with atomic_write(record) as tmp:
                    tmp.write_text(dumps_strict({"files": sorted(previous)}, REPLACING_FILE) + "\n")
            self.summary_path.unlink(missing_ok=True)  # from here on the folder is not a finished result
            for name in stale:
                (self.directory / name).unlink(missing_ok=True)
            for name in self._names:
                os.replace(self._staging / name, self.directory / name)
            with atomic_write(self.summary_path) as tmp:
                tmp.write_text(text, encoding="utf-8")
            record.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write into output folder {self.directory}: {exc.strerror}") from None
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._lock.release()
        self.committed = True
        self.removed = stale
        return stale

    def discard(self) -> None:
        """Remove the staging folder and everything in it (and the output folder if this run made it)."""
        shutil.rmtree(self._staging, ignore_errors=True)
        self._lock.release()
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        try:
            if self._created and not any(self.directory.iterdir()):
                self.directory.rmdir()
        except OSError:
            pass

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.discard()


def _is_file(path: Path) -> bool:
    return path.is_symlink() or path.is_file()


def describe_removed(names: Iterable[str]) -> str:
    """One line naming the files of an earlier run that a new run removed (empty when none)."""
    names = list(names)
    if not names:
        return ""
    return f"removed {len(names)} file(s) of the earlier run this one replaces: {', '.join(names)}"
