"""File-system helpers: atomic writes, strict JSON, debris of killed runs, and a lock per output folder.

* :func:`atomic_write`: a file is either whole or absent, never half-written.
* :func:`dumps_strict` / :func:`loads_strict`: JSON without ``NaN`` or ``Infinity`` (strict JSON).
* :func:`remove_debris`: what a killed run leaves behind (hidden staging folders, ``.partial`` files).
* :class:`FolderLock`: one seguncertainty run at a time writes into a folder; the lock is the operating
  system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), so a killed run never leaves a
  stale lock, and its file is removed when the run ends normally.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import OutputError, SegUncertaintyError

LOCK_FILE = ".seguncertainty.lock"
STAGING_PREFIX = ".staging-"
# the names tempfile gives: 8 characters from "abcdefghijklmnopqrstuvwxyz0123456789_"
_STAGING = re.compile(rf"^{re.escape(STAGING_PREFIX)}[a-z0-9_]{{8}}$")
_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.partial(\..*)?$")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it onto ``path``.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so that writers choosing a format by
    extension pick the right one. On any failure it is removed and ``path`` is left untouched.
    The final file gets ordinary permissions (0666 minus the umask), not ``mkstemp``'s 0600.
    A run killed inside the block leaves the hidden ``.<name>.<random>.partial<suffix>`` file, which
    :func:`remove_debris` recognises.
    """
    path = Path(path)
    if suffix is None:
        suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def make_folder(folder: Path) -> None:
    """Create an output folder (and its parents) if missing.

    Raises:
        OutputError: it is a file, or it cannot be created.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output folder {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write into output folder {folder}: {exc.strerror}") from None


def is_partial_file(name: str) -> bool:
    """True for the name of a temporary file :func:`atomic_write` makes (``.<name>.<random>.partial<suffix>``)."""
    return bool(_PARTIAL.match(name))


def is_staging_folder(name: str) -> bool:
    """True for the name of a hidden staging folder (``.staging-<random>``, see :mod:`..outputs`)."""
    return bool(_STAGING.match(name))


def remove_debris(folder: str | os.PathLike, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove what killed runs left directly inside ``folder``: staging folders and ``.partial`` files.

    Call it only while holding the folder's :class:`FolderLock` (a live run's staging folder and
    temporary files look the same). Anything else, and the names in ``keep``, are left alone.

    Returns:
        The names removed, sorted.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.name in keep:
            continue
        if is_staging_folder(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        elif is_partial_file(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)


def _non_finite(data: Any, where: str = "") -> tuple[str, float] | None:
    """The first path (``a.b[2]``) at which ``data`` holds a float that is not finite, with that value."""
    if isinstance(data, float):
        return None if math.isfinite(data) else (where or "the top level", data)
    if isinstance(data, dict):
        items = ((f"{where}.{key}" if where else str(key), value) for key, value in data.items())
    elif isinstance(data, list | tuple):
        items = ((f"{where}[{index}]", value) for index, value in enumerate(data))
    else:
        return None
    for path, value in items:
        found = _non_finite(value, path)
        if found is not None:
            return found
    return None


def dumps_strict(data: Any, what: str, indent: int | None = 2) -> str:
    """``json.dumps`` that refuses ``NaN`` and ``Infinity`` (strict JSON) with a message that says where.

    Args:
        data: what to serialise.
        what: the file, for the message (e.g. ``"summary.json"``).
        indent: as for :func:`json.dumps`.

    Raises:
        SegUncertaintyError: ``data`` holds a number that is not finite.
    """
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        found = _non_finite(data)
        if found is None:
            raise
        raise SegUncertaintyError(
            f"{what} would hold {found[1]} at {found[0]}; not written (a result must be a finite number)"
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (raises ``ValueError``)."""
    return json.loads(text, parse_constant=_reject_constant)


class FolderLock:
    """An exclusive, non-blocking lock on a folder, held by one process while it writes there.

    The lock is taken on the file ``<folder>/.seguncertainty.lock`` with the operating system's
    advisory locks, so it disappears with the process that held it, whatever killed it. The file
    records the holder (pid, start time, command) for the message a second run gets; it is removed
    when the lock is released. Two locks on one folder exclude each other also within one process.

    Usage::

        with FolderLock(out_dir):
            ...  # write into out_dir

    Raises (on acquiring):
        OutputError: another run holds the lock ("another seguncertainty run is writing into DIR
            (pid N since ...)"), or the lock file cannot be created.
    """

    _WINDOWS_OFFSET = 1 << 30  # the byte locked on Windows, beyond the holder's record so others can read it

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (at once or not at all) and record the holder; returns ``self``."""
        if self._fd is not None:
            return self
        for _ in range(100):  # a holder finishing meanwhile removes the file: lock the new one
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            except OSError as exc:
                raise OutputError(f"cannot write into output folder {self.folder}: {exc.strerror}") from None
            if not self._try_lock(fd):
                holder = self._holder(fd)
                os.close(fd)
                raise OutputError(f"another seguncertainty run is writing into {self.folder} ({holder})")
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                self._fd = fd
                self._record()
                return self
            os.close(fd)
        raise OutputError(f"cannot lock the output folder {self.folder}: its lock file keeps changing")

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing happens when it is not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform == "win32":
            import msvcrt

            try:
                os.lseek(fd, self._WINDOWS_OFFSET, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            except OSError:
                pass
            os.close(fd)
            try:  # fails while another process has the file open: that one is taking the lock
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            return
        try:  # still locked: nobody can take this file between the unlink and the close
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(fd)

    def _try_lock(self, fd: int) -> bool:
        if sys.platform == "win32":
            import msvcrt

            try:
                os.lseek(fd, self._WINDOWS_OFFSET, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # EWOULDBLOCK / EAGAIN: another process holds it
            return False
        except OSError as exc:  # no locking on this file system (NFS without lockd, some FUSE mounts)
            raise OutputError(f"cannot lock the output folder {self.folder}: {exc.strerror}") from None
        return True

    def _record(self) -> None:
        record = {
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        }
        data = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.ftruncate(self._fd, 0)
            os.write(self._fd, data)
        except OSError:  # the record only improves the message of a second run
            pass

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            record = json.loads(os.read(fd, 4096).decode("utf-8"))
            return f"pid {int(record['pid'])} since {record['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "pid unknown: it is just starting"

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
