"""Run ``seguncertainty predict`` (or ``train-head``) in a child process and follow it without blocking.

Front ends (the Slicer module) must stay responsive while a volume is segmented, be able to cancel,
and show a clear message when the run fails. The child is ``python -m SegUncertaintyLib predict
... --progress json``: its stdout carries one JSON event per line (see :mod:`.progress`), which a
reader thread queues; :meth:`PredictProcess.poll` hands them over from the caller's thread (a Qt
timer in Slicer).

The interpreter may not be the process we start: Slicer's ``PythonSlicer`` is the CTK application
launcher, which runs the real interpreter as its own child and forwards no signal to it. So the
child is started as the leader of a new process group (a new process group on Windows), and a
cancel reaches the whole tree: its standard input is closed (the launcher forwards it; the command
stops on end of input, see :data:`STOP_ON_STDIN_EOF`), SIGTERM goes to the group (the command
removes its staged files and exits 143), and after a grace period the tree is killed. The run is
over when every process of the tree has let go of its output pipes, not when the launcher exits.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The folder holding SegUncertaintyLib: the child must import this very engine, also inside Slicer,
# whose Python does not have it on its default path.
ENGINE_ROOT = Path(__file__).resolve().parent.parent
EXIT_CANCELLED = (130, 143)
# Set in the child's environment: the command stops, as on SIGTERM, when its standard input ends,
# i.e. when the front end closed it or died (a crashed Slicer leaves no engine running).
STOP_ON_STDIN_EOF = "SEGUNCERTAINTY_STOP_ON_STDIN_EOF"
_WINDOWS = sys.platform == "win32"


def predict_arguments(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | None = None,
    uncertainty: str = "auto",
    fragility: bool = False,
    device: str = "auto",
    region_threshold: float | None = None,
    alpha: float | None = None,
) -> list[str]:
    """The ``seguncertainty predict`` arguments (after ``predict``) for these choices, JSON progress included
    (``alpha`` and ``region_threshold``: see ``--alpha`` and ``--region-threshold``; None: predict's default)."""
    arguments = ["--input", str(input_path), "--output-dir", str(output_dir), "--uncertainty", uncertainty]
    arguments += ["--device", device, "--progress", "json"]
    if model:
        arguments += ["--model", str(model)]
    if fragility:
        arguments.append("--fragility")
    if region_threshold is not None:
        arguments += ["--region-threshold", str(region_threshold)]
    if alpha is not None:
        arguments += ["--alpha", str(alpha)]
    return arguments


def head_training_arguments(
    model: str | os.PathLike,
    images: str | os.PathLike | None = None,
    reviews: str | os.PathLike | None = None,
    device: str = "auto",
    options: Sequence[str] = (),
) -> list[str]:
    """The ``seguncertainty train-head`` arguments (after ``train-head``) that train ``model``'s head on a folder
    of unlabelled scans (``images``) or on the review sessions under ``reviews``, JSON progress included
    (``options``: further ``train-head`` options, e.g. ``["--max-epochs", "20"]``)."""
    if (images is None) == (reviews is None):
        raise ValueError("give either a folder of scans or a folder of review sessions")
    source = ["--images", str(images)] if images is not None else ["--from-reviews", str(reviews)]
    return ["--model", str(model), *source, *options, "--device", device, "--progress", "json"]


class PredictProcess:
    """One ``seguncertainty`` command in a child process (and whatever processes that one starts).

    Args:
        arguments: the command and its options, e.g. ``["predict", *predict_arguments(...)]``.
        python: the interpreter to run it with (default: this one; in Slicer, ``PythonSlicer``).
        environment: extra environment variables for the child.
        log_lines: how many lines of the child's stderr to keep for error messages.
    """

    def __init__(
        self,
        arguments: list[str],
        python: str | None = None,
        environment: dict[str, str] | None = None,
        log_lines: int = 200,
    ):
        self.command = [python or sys.executable, "-m", "SegUncertaintyLib", *arguments]
        self.environment = dict(environment or {})
        self.log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self.fraction = 0.0
        self.stage = ""
        self.outputs: dict[str, Any] | None = None
        self.error: str | None = None
        self.cancelled = False
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._kill_at: float | None = None

    def start(self) -> None:
        """Start the child (returns at once)."""
        env = {**os.environ, **self.environment}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env[STOP_ON_STDIN_EOF] = "1"
        if _WINDOWS:  # its own group, and no console window pops up
            group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
        else:
            group = {"start_new_session": True}
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE,  # held open while the run may go on
            text=True,
            env=env,
            **group,
        )
        self._readers = [
            threading.Thread(target=self._read_events, args=(self._process.stdout,), daemon=True),
            threading.Thread(target=self._read_log, args=(self._process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self, stream: Any) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:  # not an event: keep it with the log
                self.log.append(line.rstrip())
                continue
            if isinstance(event, dict):
                self._events.put(event)

    def _read_log(self, stream: Any) -> None:
        for line in stream:
            self.log.append(line.rstrip())

    @property
    def returncode(self) -> int | None:
        """The exit status of the process started, None while it runs (or before :meth:`start`)."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`finished`."""
        return self._process is not None and not self.finished()

    def poll(self) -> list[dict[str, Any]]:
        """The events received since the last call (never blocks); updates ``fraction``, ``outputs``, ``error``.

        After :meth:`cancel`, also kills the tree once the grace period is over.
        """
        if self._kill_at is not None and time.monotonic() >= self._kill_at and not self.finished():
            self.kill()
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            events.append(event)
            if event.get("event") == "progress":
                self.fraction = max(self.fraction, float(event.get("fraction", 0.0)))
                self.stage = str(event.get("stage", ""))
            elif event.get("event") == "done":
                self.outputs = event.get("outputs", {})
            elif event.get("event") == "error":
                self.error = str(event.get("message", "failed"))
        return events

    def finished(self) -> bool:
        """True once the process started has exited and every process of its tree has closed its output."""
        if self._process is None or self._process.poll() is None:
            return False
        return not any(reader.is_alive() for reader in self._readers)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the run is over (see :meth:`finished`); returns the exit status of the process started.

        A cancel in progress is carried through (the tree is killed when its grace period ends).

        Raises:
            subprocess.TimeoutExpired: not over after ``timeout`` seconds.
        """
        if self._process is None:
            raise RuntimeError("the process was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.command, timeout)
            self.poll()  # escalates a cancel whose grace period is over
            time.sleep(0.02)
        self.poll()
        return self._process.returncode

    def cancel(self, grace_seconds: float = 10.0) -> None:
        """Ask the whole tree to stop (the command removes its staged files); returns at once.

        The tree is killed if it is still there ``grace_seconds`` later (checked by :meth:`poll`
        and :meth:`wait`). :meth:`finished` tells when it is gone.
        """
        if self._process is None or self.finished():
            return
        self.cancelled = True
        self._close_stdin()
        if not _WINDOWS:  # there a console-less process has no polite signal: end of input must do
            self._signal_group(signal.SIGTERM)
        if self._kill_at is None:
            self._kill_at = time.monotonic() + grace_seconds

    def kill(self) -> None:
        """Kill the whole tree now (no clean-up in the child: the caller removes what it left)."""
        if self._process is None or self.finished():
            return
        self.cancelled = True
        self._kill_at = None
        self._close_stdin()
        if _WINDOWS:
            # taskkill walks the tree from the launcher, which waits for its child until killed
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(self._process.pid)],
                capture_output=True,
                creationflags=subprocess.CREATE_NO_WINDOW,
                check=False,
            )
        else:
            self._signal_group(signal.SIGKILL)

    def _close_stdin(self) -> None:
        assert self._process is not None
        try:
            if self._process.stdin is not None and not self._process.stdin.closed:
                self._process.stdin.close()
        except OSError:  # the child is already gone
            pass

    def _signal_group(self, signum: int) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, signum)  # the child leads its own group (start_new_session)
        except (ProcessLookupError, PermissionError):  # the whole group is gone already
            pass

    def failure_message(self) -> str | None:
        """None if the run succeeded (or runs); else what to tell the user, the log's last lines included."""
        code = self.returncode
        if code is None or (code == 0 and self.outputs is not None and not self.cancelled):
            return None
        if self.cancelled or code in EXIT_CANCELLED:
            return "cancelled"
        message = self.error or f"seguncertainty exited with status {code}"
        tail = [line for line in self.log if line][-5:]
        return message if not tail or self.error else message + "\n" + "\n".join(tail)
