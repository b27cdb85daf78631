"""A ``PythonSlicer``-like launcher for tests (Testing/data/spawning_launcher.py) and process checks."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent / "data" / "spawning_launcher.py"


def make_launcher(folder: Path) -> tuple[Path, Path]:
    """An executable that runs this interpreter through the spawning launcher; returns (executable, PID file).

    Set ``LAUNCHER_CHILD_PID_FILE`` to the PID file in the environment the launcher runs in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    executable = folder / "PythonSlicer"
    executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{LAUNCHER}" "$@"\n', encoding="utf-8")
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    return executable, folder / "interpreter.pids"


def interpreter_pids(pid_file: Path) -> list[int]:
    """The PIDs of the interpreters the launcher started (one per run)."""
    return [int(line) for line in pid_file.read_text(encoding="utf-8").split()] if pid_file.exists() else []


def is_gone(pid: int) -> bool:
    """True once a process has exited (a zombie waiting for its parent to reap it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return fields[0] in ("Z", "X")
