"""Labelled cases written as ordinary volume files: a folder to run ``triage`` on, with its truth beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..io import check_writable_suffix, write_volume
from ..progress import Progress
from .cases import Case


def export_cases(
    cases: Sequence[Case], output_dir: Path, file_format: str = "nrrd", progress: Progress | None = None
) -> list[Path]:
    """Write ``<case>.<ext>`` (the image) and ``reference/<case>.<ext>`` (the raters' majority, uint8) per case.

    Returns:
        The image files written.
    """
    extension = "." + file_format.lstrip(".")
    check_writable_suffix(Path("x" + extension))
    reference = Path(output_dir) / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    written = []
    for n, case in enumerate(cases):
        path = Path(output_dir) / f"{case.case_id}{extension}"
        write_volume(case.image, case.geometry, path)
        write_volume(case.majority.astype("uint8"), case.geometry, reference / f"{case.case_id}{extension}")
        written.append(path)
        if progress is not None:
            progress("export", (n + 1) / len(cases), case.case_id)
    return written
