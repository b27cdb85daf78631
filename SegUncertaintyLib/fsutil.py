"""Atomic file writes: a file is either whole or absent, never half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
