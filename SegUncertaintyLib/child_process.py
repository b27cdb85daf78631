"""Run ``seguncertainty predict`` in a child process and follow it without blocking.

Front ends (the Slicer module) must stay responsive while a volume is segmented, be able to cancel,
and show a clear message when the run fails. The child is ``python -m SegUncertaintyLib predict
... --progress json``: its stdout carries one JSON event per line (see :mod:`.progress`), which a
reader thread queues; :meth:`PredictProcess.poll` hands them over from the caller's thread (a Qt
timer in Slicer). Cancelling sends SIGTERM, on which the command removes its staged files and exits
143, and kills the child if it has not stopped after a grace period.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

# The folder holding SegUncertaintyLib: the child must import this very engine, also inside Slicer,
# whose Python does not have it on its default path.
ENGINE_ROOT = Path(__file__).resolve().parent.parent
EXIT_CANCELLED = (130, 143)


def predict_arguments(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | None = None,
    uncertainty: str = "auto",
    fragility: bool = False,
    device: str = "auto",
    region_threshold: float | None = None,
) -> list[str]:
    """The ``seguncertainty predict`` arguments (after ``predict``) for these choices, JSON progress included."""
    arguments = ["--input", str(input_path), "--output-dir", str(output_dir), "--uncertainty", uncertainty]
    arguments += ["--device", device, "--progress", "json"]
    if model:
        arguments += ["--model", str(model)]
    if fragility:
        arguments.append("--fragility")
    if region_threshold is not None:
        arguments += ["--region-threshold", str(region_threshold)]
    return arguments


class PredictProcess:
    """One ``seguncertainty`` command in a child process.

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

    def start(self) -> None:
        """Start the child (returns at once)."""
        env = {**os.environ, **self.environment}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            # no console window pops up on Windows
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
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
        """The exit status, None while running (or before :meth:`start`)."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def poll(self) -> list[dict[str, Any]]:
        """The events received since the last call (never blocks); updates ``fraction``, ``outputs``, ``error``."""
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
        """True once the child has exited and every event and log line it wrote was read."""
        if self.running or self._process is None:
            return False
        return not any(reader.is_alive() for reader in self._readers)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits and its output is read; returns its exit status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        if self._process is None:
            raise RuntimeError("the process was not started")
        code = self._process.wait(timeout)
        for reader in self._readers:
            reader.join()
        self.poll()
        return code

    def cancel(self, grace_seconds: float = 10.0) -> None:
        """Ask the child to stop (it removes its staged files), kill it if it has not after ``grace_seconds``."""
        if not self.running:
            return
        self.cancelled = True
        assert self._process is not None
        self._process.terminate()
        try:
            self._process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def failure_message(self) -> str | None:
        """None if the run succeeded (or runs); else what to tell the user, the log's last lines included."""
        code = self.returncode
        if code is None or (code == 0 and self.outputs is not None):
            return None
        if self.cancelled or code in EXIT_CANCELLED:
            return "cancelled: no outputs were written"
        message = self.error or f"seguncertainty exited with status {code}"
        tail = [line for line in self.log if line][-5:]
        return message if not tail or self.error else message + "\n" + "\n".join(tail)
