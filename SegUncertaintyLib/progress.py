"""Progress reporting for long operations.

A :class:`Progress` is called as ``progress(stage, fraction)`` with the fraction of that stage done.
Given the weights of the stages it also knows the fraction of the whole run, which is what a
progress bar shows. Sinks: a text bar on stderr, JSON lines on stdout (the protocol between the
CLI and the Slicer module, see DESIGN.md), or nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO


class Progress:
    """Silent progress tracker; subclasses decide how to show it.

    Args:
        stages: relative weight of each stage, in run order. A stage not listed counts as its own run.
    """

    def __init__(self, stages: dict[str, float] | None = None):
        self.stages = dict(stages or {})
        self._last_stage: str | None = None

    def overall(self, stage: str, fraction: float) -> float:
        """Fraction of the whole run done when ``stage`` is ``fraction`` done."""
        if stage not in self.stages:
            return fraction
        total = sum(self.stages.values())
        before = 0.0
        for name, weight in self.stages.items():
            if name == stage:
                return (before + weight * fraction) / total
            before += weight
        return fraction

    def __call__(self, stage: str, fraction: float = 0.0, message: str | None = None) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0) if math.isfinite(float(fraction)) else 0.0
        self.report(stage, fraction, self.overall(stage, fraction), message)
        self._last_stage = stage

    def report(self, stage: str, fraction: float, overall: float, message: str | None) -> None:
        """Show one update (no-op here)."""

    def done(self, outputs: dict[str, Any]) -> None:
        """The run finished; ``outputs`` names what it wrote."""

    def error(self, message: str) -> None:
        """The run failed with ``message``."""


class TextProgress(Progress):
    """A one-line bar per stage on a text stream (stderr by default), redrawn at most every 0.2 s."""

    def __init__(self, stages: dict[str, float] | None = None, stream: TextIO | None = None, width: int = 30):
        super().__init__(stages)
        self.stream = stream or sys.stderr
        self.width = width
        self._last_draw = 0.0
        self._last_decile = -1
        self._interactive = getattr(self.stream, "isatty", lambda: False)()

    def report(self, stage: str, fraction: float, overall: float, message: str | None) -> None:
        new_stage = stage != self._last_stage
        now = time.monotonic()
        if not new_stage and fraction < 1.0 and now - self._last_draw < 0.2:
            return
        decile = int(fraction * 10)
        if not self._interactive and not new_stage and decile == self._last_decile:
            return  # in a log file, one line per tenth of a stage is enough
        self._last_draw, self._last_decile = now, decile
        filled = round(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{stage:<14} [{bar}] {100 * fraction:5.1f}%" + (f"  {message}" if message else "")
        if self._interactive:
            end = "\n" if fraction >= 1.0 else ""
            self.stream.write("\r" + line + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def error(self, message: str) -> None:
        if self._interactive and self._last_stage is not None:
            self.stream.write("\n")


class JsonProgress(Progress):
    """One JSON object per line: ``{"event": "progress", "stage", "fraction", "stage_fraction"}``,
    then ``{"event": "done", "outputs": {...}}`` or ``{"event": "error", "message": ...}``.

    ``fraction`` is the fraction of the whole run (monotone); ``stage_fraction`` that of the stage.
    Updates closer than 0.5 % of the run are dropped, stage changes never are.
    """

    def __init__(self, stages: dict[str, float] | None = None, stream: TextIO | None = None):
        super().__init__(stages)
        self.stream = stream or sys.stdout
        self._last_overall = -1.0

    def _emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, allow_nan=False) + "\n")
        self.stream.flush()

    def report(self, stage: str, fraction: float, overall: float, message: str | None) -> None:
        if stage == self._last_stage and overall - self._last_overall < 0.005 and fraction < 1.0:
            return
        self._last_overall = overall
        event = {
            "event": "progress",
            "stage": stage,
            "fraction": round(overall, 4),
            "stage_fraction": round(fraction, 4),
        }
        if message:
            event["message"] = message
        self._emit(event)

    def done(self, outputs: dict[str, Any]) -> None:
        self._emit({"event": "done", "outputs": outputs})

    def error(self, message: str) -> None:
        self._emit({"event": "error", "message": message})


def make_progress(kind: str, stages: dict[str, float] | None = None) -> Progress:
    """``"text"`` (stderr bar), ``"json"`` (stdout JSON lines) or ``"none"``."""
    if kind == "text":
        return TextProgress(stages)
    if kind == "json":
        return JsonProgress(stages)
    if kind == "none":
        return Progress(stages)
    raise ValueError(f"unknown progress kind {kind!r}; use text, json or none")
