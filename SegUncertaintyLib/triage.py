"""``seguncertainty triage``: every volume of a folder through ``predict``, then a worklist, worst first.

Each case gets its own folder ``<output>/cases/<name>/`` with predict's outputs, ``report.html`` and
``thumbnail.png``. A case whose ``summary.json`` is there is finished and is not run again, so an
interrupted triage resumes where it stopped (predict writes a case's files all or nothing). A case
that fails (an unreadable file) is listed with its error; the others go on. The worklist
(``worklist.csv``, ``worklist.html``) is rewritten every few cases and at the end: worst estimated Dice first
(cases without an estimate after, by expected wrong volume), with the volume and its interval, the
fragile volume, the region count, a thumbnail and a link to each report.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from .errors import Cancelled, SegUncertaintyError
from .fragility.config import FragilityConfig
from .fsutil import atomic_write
from .model.package import ModelPackage, load_package
from .pipeline import predict_to_files
from .progress import Progress
from .reporting.case_report import REPORT_FILE, STYLE, case_thumbnail, data_uri, read_run, save_report
from .review.regions import DEFAULT_THRESHOLD

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
THUMBNAIL_FILE = "thumbnail.png"
FAILED_FILE = "failed.json"
WORKLIST_EVERY = 10  # cases between rewrites of the worklist (and always at the end, or when stopped)


def case_name(path: Path) -> str:
    """The case's name: the file name without its volume suffix (or the DICOM folder's name)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_inputs(input_dir: Path) -> list[Path]:
    """The volume files and DICOM folders directly inside ``input_dir``, sorted by name.

    Raises:
        SegUncertaintyError: the folder is missing or holds no volume.
    """
    if not input_dir.is_dir():
        raise SegUncertaintyError(f"input folder not found: {input_dir}")
    found = []
    for path in sorted(input_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES):
            found.append(path)
        elif path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
            found.append(path)
    if not found:
        raise SegUncertaintyError(
            f"no volume in {input_dir} (looked for {', '.join(VOLUME_SUFFIXES)} and DICOM folders)"
        )
    return found


def worklist_rows(output_dir: Path, inputs: list[Path]) -> list[dict[str, Any]]:
    """One row per input, from what its case folder holds, worst first."""
    rows = []
    for source in inputs:
        folder = output_dir / "cases" / case_name(source)
        row: dict[str, Any] = {"case": case_name(source), "input": str(source), "folder": str(folder)}
        if (folder / "summary.json").is_file():
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            quality = summary.get("quality") or {}
            forecast = quality.get("volume_forecast_ml")
            regions = json.loads((folder / summary["outputs"]["regions"]).read_text(encoding="utf-8"))["regions"]
            row.update(
                status="done",
                estimated_dice=quality.get("estimated_dice"),
                estimated_dice_net=quality.get("estimated_dice_net"),
                needs_review=quality.get("needs_review"),
                volume_ml=round(sum(c["volume_ml"] for c in summary["classes"]), 4),
                interval_90_ml=forecast["interval_90"] if forecast else None,
                fragile_ml=(summary.get("fragility") or {}).get("fragile_volume_ml"),
                expected_wrong_ml=round(sum(r["expected_error_ml"] for r in regions), 4),
                regions=len(regions),
                report=f"cases/{case_name(source)}/{REPORT_FILE}",
            )
        elif (folder / FAILED_FILE).is_file():
            row.update(status="failed", error=json.loads((folder / FAILED_FILE).read_text(encoding="utf-8"))["error"])
        else:
            row.update(status="pending")
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple:
        if row["status"] != "done":
            return (2, 0.0, row["case"])
        if row["estimated_dice"] is None:
            return (1, -row["expected_wrong_ml"], row["case"])
        return (0, row["estimated_dice"], row["case"])

    return sorted(rows, key=order)


CSV_COLUMNS = (
    "rank case status estimated_dice estimated_dice_net needs_review volume_ml interval_90_low_ml interval_90_high_ml "
    "fragile_ml expected_wrong_ml regions report input error"
).split()


def _atomic_write(path: Path, text: str) -> None:
    with atomic_write(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_worklist(output_dir: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``worklist.csv`` and ``worklist.html`` (atomically) and return their paths."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    cards = []
    for rank, row in enumerate(rows, start=1):
        interval = row.get("interval_90_ml") or [None, None]
        writer.writerow({**row, "rank": rank, "interval_90_low_ml": interval[0], "interval_90_high_ml": interval[1]})
        cards.append(_html_row(output_dir, rank, row))
    _atomic_write(output_dir / "worklist.csv", buffer.getvalue())
    done = sum(r["status"] == "done" for r in rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SegUncertainty worklist</title><style>{STYLE}
td {{ vertical-align: middle; }} img.thumb {{ width: 120px; }}</style></head><body>
<h1>Worklist</h1>
<p class="muted">{done} of {len(rows)} cases done; worst estimated Dice first (estimated without ground truth).</p>
<table><tr><th>#</th><th>case</th><th>estimated Dice</th><th>volume (mL), 90 % interval</th><th>fragile (mL)</th>
<th>expected wrong (mL)</th><th>regions</th><th>slice through the worst region</th></tr>
{"".join(cards)}
</table></body></html>
"""
    _atomic_write(output_dir / "worklist.html", page)
    return output_dir / "worklist.csv", output_dir / "worklist.html"


def _html_row(output_dir: Path, rank: int, row: dict[str, Any]) -> str:
    name = html.escape(row["case"])
    if row["status"] != "done":
        message = html.escape(row.get("error", row["status"]))
        return f"<tr><td>{rank}</td><td>{name}</td><td colspan='6' class='muted'>{message}</td></tr>"
    dice = row["estimated_dice"]
    badge = ""
    if dice is not None:
        css = "bad" if row["needs_review"] else "good"
        badge = f"<span class='badge {css}'>{dice:.2f}</span>"
    interval = row["interval_90_ml"]
    volume = f"{row['volume_ml']:.3f}" + (f" ({interval[0]:.3f} – {interval[1]:.3f})" if interval else "")
    fragile = "–" if row["fragile_ml"] is None else f"{row['fragile_ml']:.3f}"
    thumb = Path(row["folder"]) / THUMBNAIL_FILE
    image = f"<img class='thumb' alt='{name}' src='{data_uri(thumb.read_bytes())}'>" if thumb.is_file() else ""
    return (
        f"<tr><td>{rank}</td><td><a href='{html.escape(row['report'])}'>{name}</a></td><td>{badge or '–'}</td>"
        f"<td>{volume}</td><td>{fragile}</td><td>{row['expected_wrong_ml']:.3f}</td><td>{row['regions']}</td>"
        f"<td>{image}</td></tr>"
    )


def finish_case(folder: Path, source: Path) -> None:
    """The report and thumbnail of a predicted case (written only when missing)."""
    if (folder / REPORT_FILE).is_file() and (folder / THUMBNAIL_FILE).is_file():
        return
    view = read_run(folder, source)
    if not (folder / REPORT_FILE).is_file():
        save_report(view)
    if not (folder / THUMBNAIL_FILE).is_file():
        with atomic_write(folder / THUMBNAIL_FILE) as staging:
            staging.write_bytes(case_thumbnail(view))


def run_case(
    source: Path,
    folder: Path,
    package: ModelPackage,
    device: str,
    fragility: FragilityConfig | None,
    region_threshold: float,
) -> str:
    """Predict one case into ``folder``: ``"ran"``, or ``"failed"`` with the reason in ``failed.json``."""
    try:
        predict_to_files(source, folder, package, device, fragility=fragility, region_threshold=region_threshold)
    except Cancelled:
        raise
    except SegUncertaintyError as exc:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / FAILED_FILE, json.dumps({"error": str(exc)}) + "\n")
        return "failed"
    (folder / FAILED_FILE).unlink(missing_ok=True)
    return "ran"


def triage(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    device: str = "auto",
    fragility: FragilityConfig | None = None,
    region_threshold: float = DEFAULT_THRESHOLD,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every volume of ``input_dir`` (skipping finished cases) and write the worklist.

    Args:
        input_dir: folder of volume files and DICOM folders.
        output_dir: receives ``cases/<name>/`` per case, ``worklist.csv`` and ``worklist.html``.
        model: bundled model name or package folder.
        device: ``auto``, ``cpu`` or ``cuda``.
        fragility: also run the fragility search with these settings.
        region_threshold: see :func:`..pipeline.predict_to_files`.
        progress: receives stage ``"triage"`` after every case.

    Returns:
        Counts (``cases``, ``ran``, ``skipped``, ``failed``) and the worklist paths.
    """
    report = progress or Progress()
    inputs = find_inputs(Path(input_dir))
    output_dir = Path(output_dir)
    (output_dir / "cases").mkdir(parents=True, exist_ok=True)
    package = load_package(model)
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    try:
        for n, source in enumerate(inputs):
            folder = output_dir / "cases" / case_name(source)
            if (folder / "summary.json").is_file():
                counts["skipped"] += 1
            else:
                counts[run_case(source, folder, package, device, fragility, region_threshold)] += 1
            if (folder / "summary.json").is_file():
                finish_case(folder, source)
            if (n + 1) % WORKLIST_EVERY == 0:
                write_worklist(output_dir, worklist_rows(output_dir, inputs))
            report("triage", (n + 1) / len(inputs), case_name(source))
    finally:  # also when cancelled: the worklist shows what is done
        write_worklist(output_dir, worklist_rows(output_dir, inputs))
    return {
        "cases": len(inputs),
        **counts,
        "worklist_csv": str(output_dir / "worklist.csv"),
        "worklist_html": str(output_dir / "worklist.html"),
    }
