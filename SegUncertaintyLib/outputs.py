"""An output folder whose files appear whole or not at all.

Files are written into a hidden staging folder inside the output folder (same file system, so the
final move is a rename). ``commit`` moves them into place with ``summary.json`` last; any failure or
cancellation before that removes the staging folder and leaves the output folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import OutputError
from .fsutil import atomic_write


class StagedOutput:
    """Context manager staging the files of one run.

    Usage::

        with StagedOutput(out_dir) as out:
            write_volume(seg, geom, out.stage("segmentation.nrrd"))
            out.commit(summary)   # moves the files, then writes summary.json
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._created = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.directory))
        except OSError as exc:
            raise OutputError(f"cannot write into output folder {self.directory}: {exc.strerror}") from None
        self._names: list[str] = []
        self.committed = False

    def stage(self, name: str) -> Path:
        """Path in the staging folder for the output file ``name`` (a plain file name)."""
        if Path(name).name != name or name == "summary.json":
            raise ValueError(f"invalid output name {name!r}")
        self._names.append(name)
        return self._staging / name

    def commit(self, summary: dict[str, Any]) -> Path:
        """Move every staged file into the output folder, then write ``summary.json`` atomically."""
        try:
            for name in self._names:
                os.replace(self._staging / name, self.directory / name)
            with atomic_write(self.directory / "summary.json") as tmp:
                tmp.write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write into output folder {self.directory}: {exc.strerror}") from None
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        self.committed = True
        return self.directory / "summary.json"

    def discard(self) -> None:
        """Remove the staging folder and everything in it (and the output folder if this run made it)."""
        shutil.rmtree(self._staging, ignore_errors=True)
        if self._created and not any(self.directory.iterdir()):
            self.directory.rmdir()

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.discard()
