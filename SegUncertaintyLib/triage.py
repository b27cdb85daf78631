"""``seguncertainty triage``: every volume of a folder through ``predict``, then a worklist, worst first.

Each case gets its own folder ``<output>/cases/<name>/`` with predict's outputs, ``report.html`` and
``thumbnail.png``. A DICOM folder of several series is one case per series (``<folder>-<series
description>``, or the UID's last digits where descriptions are missing or shared); a series of one
file is not a case (as ``predict`` does). A case's name is its file name without the volume suffix
(``a`` for ``a.nrrd``); when two inputs would share one (``a.nrrd`` and ``a.nii.gz``), each keeps its whole file name
(``a.nrrd``, ``a.nii.gz``), so no two inputs ever share a case folder; names depend only on the
inputs present, so a resumed triage finds the same folders. A case whose ``summary.json`` is there
(and came from this input) is finished and is not run again, so an interrupted triage resumes where
it stopped (predict writes a case's files all or nothing). One case's failure never stops the batch:
whatever goes wrong with it (an unreadable file, its report, a bug) is kept in its ``failed.json``,
listed with it in the worklist, and the others go on. The worklist (``worklist.csv``,
``worklist.html``) is rewritten every few cases and at the end: failed cases first, then scans
outside what the model was made for, then worst estimated Dice first (cases without an estimate
after, by the expected wrong volume in their regions), with the volume and its interval, the fragile
volume, the region count, a thumbnail and a link to each report (only to a report that was written).

One triage at a time writes into an output folder: it holds the folder's lock (see
:class:`~.fsutil.FolderLock`), and a second one is refused with a message.
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .cluster import ClusterSettings, open_client, run_cases, worker_predictor
from .errors import Cancelled, OutputError, SegUncertaintyError
from .file_kinds import is_dicom_folder
from .fragility.config import SearchConfig
from .fsutil import FolderLock, atomic_write, dumps_strict, loads_strict, make_folder, remove_debris
from .guarantees import ReviewSettings
from .io import dicom_series, volume_series
from .pipeline import predict_to_files
from .predict_folder import PredictFolder
from .predictor import Predictor
from .progress import Progress
from .reporting.case_report import (
    REPORT_FILE,
    STYLE,
    case_thumbnail,
    data_uri,
    read_run,
    save_report,
)

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
THUMBNAIL_FILE = "thumbnail.png"
FAILED_FILE = "failed.json"
WORKLIST_EVERY = 10  # cases between rewrites of the worklist (and always at the end, or when stopped)


@dataclass(frozen=True)
class CaseInput:
    """One case of a triage: a volume file or a DICOM folder, and for a folder of several series, one of them.

    Attributes:
        path: the file or folder.
        series: the SeriesInstanceUID to read (None: the folder's only series, or a file).
        series_label: what tells the series apart in the case's name (its description, or the UID's end).
    """

    path: Path
    series: str | None = None
    series_label: str = ""

    @property
    def full_name(self) -> str:
        """The whole file name (with the series' label): the case's name when shorter ones collide."""
        return f"{self.path.name}-{self.series_label}" if self.series else self.path.name

    def __str__(self) -> str:
        return f"{self.path} (series {self.series})" if self.series else str(self.path)


def case_name(source: CaseInput) -> str:
    """The file name without its volume suffix (or the DICOM folder's name, with the series' label):
    a case's name unless it collides."""
    name = source.path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}-{source.series_label}" if source.series else name


def case_names(inputs: list[CaseInput]) -> list[str]:
    """Unique case names for ``inputs`` (one folder each), deterministic for a given set of inputs.

    A name is :func:`case_name`; inputs whose names collide (ignoring case, as some file systems do)
    keep their whole file name instead (``a.nrrd``, ``a.nii.gz``); a name still taken then gets
    ``-2``, ``-3``, ... in the order of ``inputs``.
    """
    stems = [case_name(p) for p in inputs]
    counts = Counter(stem.casefold() for stem in stems)
    names, taken = [], set()
    for source, stem in zip(inputs, stems, strict=True):
        base = source.full_name if counts[stem.casefold()] > 1 else stem
        name, n = base, 2
        while name.casefold() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.casefold())
        names.append(name)
    return names


def find_inputs(input_dir: Path) -> list[CaseInput]:
    """The volume files and DICOM series (folders) directly inside ``input_dir``, sorted by name.

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
            found.append(CaseInput(path))
        elif path.is_dir() and is_dicom_folder(path):
            found.extend(series_inputs(path))
    if not found:
        raise SegUncertaintyError(
            f"no volume in {input_dir} (looked for {', '.join(VOLUME_SUFFIXES)} and DICOM folders)"
        )
    return found


def series_inputs(folder: Path) -> list[CaseInput]:
    """The cases of a DICOM folder: the folder itself, or one per series when it holds several volumes.

    A folder that cannot be listed is one case, which then fails with the reason, on its own.
    """
    try:
        found = volume_series(dicom_series(folder))
    except SegUncertaintyError:
        return [CaseInput(folder)]
    if len(found) < 2:
        return [CaseInput(folder)]
    labels = [re.sub(r"[^A-Za-z0-9._-]+", "_", s.description).strip("_.") for s in found]
    counts = Counter(label.casefold() for label in labels)
    return [
        CaseInput(folder, s.uid, label if label and counts[label.casefold()] == 1 else s.uid.rsplit(".", 1)[-1][-8:])
        for s, label in zip(found, labels, strict=True)
    ]


def is_finished(folder: Path, source: CaseInput) -> bool:
    """True when ``folder`` holds a finished predict result of ``source`` (its ``summary.json`` names it)."""
    try:
        summary = PredictFolder.read(folder).summary
    except SegUncertaintyError:
        return False
    recorded = Path(summary.input_path).name
    names = {source.path.name}
    try:
        names.add(source.path.resolve().name)
    except OSError:
        pass
    return recorded in names and summary.series == source.series


def _failure(folder: Path) -> dict[str, Any] | None:
    try:
        record = loads_strict((folder / FAILED_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        return {"error": f"the case failed ({FAILED_FILE} is damaged)"}
    if not isinstance(record, dict) or not isinstance(record.get("error"), str):
        return {"error": f"the case failed ({FAILED_FILE} is damaged)"}
    return record


def _done_row(folder: Path, name: str) -> dict[str, Any]:
    run = PredictFolder.read(folder)
    summary, regions = run.summary, run.regions()
    quality, applicability = summary.quality, summary.applicability
    return {
        "status": "done",
        "outside": not applicability.within,
        "outside_reasons": "; ".join(applicability.reasons),
        "estimated_dice": quality.estimated_dice if quality else None,
        "estimated_dice_net": quality.estimated_dice_net if quality else None,
        "needs_review": quality.needs_review if quality else None,
        "volume_ml": summary.total_volume_ml,
        "interval_90_ml": list(quality.interval_90_ml) if quality and quality.interval_90_ml else None,
        "fragile_ml": summary.fragility.fragile_volume_ml if summary.fragility else None,
        "expected_wrong_in_regions_ml": round(sum(r.expected_error_ml for r in regions), 4),
        "regions": len(regions),
        "report": f"cases/{name}/{REPORT_FILE}",
    }


def worklist_rows(output_dir: Path, inputs: list[CaseInput]) -> list[dict[str, Any]]:
    """One row per input, from what its case folder holds, worst first.

    A case is ``done`` only when its result is finished and its report was written; a recorded
    failure makes it ``failed`` (with the error); anything else is ``pending``.
    """
    rows = []
    for source, name in zip(inputs, case_names(inputs), strict=True):
        folder = output_dir / "cases" / name
        row: dict[str, Any] = {"case": name, "input": str(source), "folder": str(folder)}
        failure = _failure(folder)
        if failure is not None:
            row.update(status="failed", error=failure["error"])
        elif is_finished(folder, source) and (folder / REPORT_FILE).is_file():
            try:
                row.update(_done_row(folder, name))
            except (SegUncertaintyError, KeyError, TypeError, ValueError) as exc:
                row.update(status="failed", error=f"cannot read the case's results: {_message(exc)}")
        else:
            row.update(status="pending")
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple:
        if row["status"] == "failed":  # a case that could not be read or reported needs a person first
            return (0, 0.0, row["case"])
        if row["status"] != "done":
            return (4, 0.0, row["case"])
        if row["outside"]:  # then scans the model was not made for, whatever their estimate
            return (1, -row["expected_wrong_in_regions_ml"], row["case"])
        if row["estimated_dice"] is None:
            return (3, -row["expected_wrong_in_regions_ml"], row["case"])
        return (2, row["estimated_dice"], row["case"])

    return sorted(rows, key=order)


CSV_COLUMNS = (
    "rank case status outside estimated_dice estimated_dice_net needs_review volume_ml interval_90_low_ml "
    "interval_90_high_ml fragile_ml expected_wrong_in_regions_ml regions report input error outside_reasons"
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
td {{ vertical-align: middle; }} img.thumb {{ width: 180px; }}</style></head><body>
<h1>Worklist</h1>
<p class="muted">{done} of {len(rows)} cases done; the cases that failed first, then the scans outside what the
model was trained on, then the worst estimated Dice (estimated without ground truth). Thumbnails: axial views in
radiological convention (the patient's right on the left); the colours are the report's and Slicer's.</p>
<table><tr><th>#</th><th>case</th><th>estimated Dice</th><th>volume (mL), 90 % interval</th><th>fragile (mL)</th>
<th title="the sum of the estimated probability of error over the high-risk regions">expected wrong in the regions
(mL)</th><th>regions</th><th>axial view through the worst region</th></tr>
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
    if row["outside"]:
        reasons = html.escape(row["outside_reasons"])
        badge = f"<span class='badge bad' title='{reasons}'>outside what the model was trained on</span>"
    elif dice is not None:
        css = "bad" if row["needs_review"] else "good"
        badge = f"<span class='badge {css}'>{dice:.2f}</span>"
    interval = row["interval_90_ml"]
    volume = f"{row['volume_ml']:.3f}" + (f" ({interval[0]:.3f} – {interval[1]:.3f})" if interval else "")
    fragile = "–" if row["fragile_ml"] is None else f"{row['fragile_ml']:.3f}"
    try:
        thumb = (Path(row["folder"]) / THUMBNAIL_FILE).read_bytes()
        image = f"<img class='thumb' alt='{name}' src='{data_uri(thumb)}'>"
    except OSError:
        image = ""
    href = html.escape(quote(row["report"]))
    return (
        f"<tr><td>{rank}</td><td><a href='{href}'>{name}</a></td><td>{badge or '–'}</td>"
        f"<td>{volume}</td><td>{fragile}</td><td>{row['expected_wrong_in_regions_ml']:.3f}</td>"
        f"<td>{row['regions']}</td>"
        f"<td>{image}</td></tr>"
    )


def _message(exc: BaseException) -> str:
    """A one-line account of a case's failure."""
    if isinstance(exc, SegUncertaintyError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return f"unexpected {type(exc).__name__}{detail} (please report this; the traceback is in {FAILED_FILE})"


def record_failure(folder: Path, stage: str, exc: BaseException) -> str:
    """Keep a case's failure in ``folder/failed.json`` (strict JSON) and return its message.

    Args:
        folder: the case folder (created if missing).
        stage: ``"predict"`` or ``"report"`` (the report or the thumbnail).
        exc: what went wrong; unexpected errors keep their traceback too.
    """
    message = _message(exc)
    if stage == "report":
        message = f"predicted, but the report could not be written: {message}"
    record: dict[str, Any] = {"error": message, "stage": stage}
    if not isinstance(exc, SegUncertaintyError | MemoryError):
        record["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / FAILED_FILE, dumps_strict(record, FAILED_FILE) + "\n")
    except OSError as exc_write:
        raise SegUncertaintyError(f"cannot record the failure of case {folder.name}: {exc_write.strerror}") from None
    return message


def finish_case(folder: Path, source: CaseInput) -> None:
    """The report and thumbnail of a predicted case (written only when missing), holding the case's lock.

    Raises:
        SegUncertaintyError: the case's results cannot be read, or another run is writing into its folder.
    """
    with FolderLock(folder):
        remove_debris(folder)
        if (folder / REPORT_FILE).is_file() and (folder / THUMBNAIL_FILE).is_file():
            return
        view = read_run(folder, source.path)  # the series is the one summary.json names
        if not (folder / REPORT_FILE).is_file():
            save_report(view)
        if not (folder / THUMBNAIL_FILE).is_file():
            with atomic_write(folder / THUMBNAIL_FILE) as staging:
                staging.write_bytes(case_thumbnail(view))


def run_case(
    source: CaseInput,
    folder: Path,
    predictor: Predictor,
    fragility: SearchConfig | None,
    review: ReviewSettings,
) -> str:
    """Predict one case into ``folder``: ``"ran"``, or ``"failed"`` with the reason in ``failed.json``.

    ``predictor`` serves every case of the run (its networks and search are built once); the
    search runs when ``fragility`` is given. Any error of the case is recorded (only a
    cancellation goes on up): one case never stops a batch.
    """
    try:
        predict_to_files(
            source.path,
            folder,
            predictor,
            fragility=fragility,
            review=review,
            series=source.series,
        )
    except Cancelled:
        raise
    except Exception as exc:
        record_failure(folder, "predict", exc)
        return "failed"
    (folder / FAILED_FILE).unlink(missing_ok=True)
    return "ran"


def _finish(folder: Path, source: CaseInput) -> bool:
    """:func:`finish_case`, recording its failure; True when the report and the thumbnail are there."""
    try:
        finish_case(folder, source)
    except Cancelled:
        raise
    except Exception as exc:
        record_failure(folder, "report", exc)
        return False
    (folder / FAILED_FILE).unlink(missing_ok=True)
    return True


def process_case(
    source: CaseInput, folder: Path, predictor: Predictor, fragility: SearchConfig | None, review: ReviewSettings
) -> str:
    """One case, from its input to its report: ``"ran"``, ``"skipped"`` (finished before) or ``"failed"``."""
    outcome = "skipped" if is_finished(folder, source) else run_case(source, folder, predictor, fragility, review)
    return _with_report(outcome, folder, source)


def _with_report(outcome: str, folder: Path, source: CaseInput) -> str:
    """A predicted case's outcome once its report and thumbnail are written (``"failed"`` if they cannot be)."""
    return "failed" if outcome == "failed" or not _finish(folder, source) else outcome


def cluster_case(source: CaseInput, folder: Path, settings: tuple) -> str:
    """:func:`process_case` on a Dask worker, with that worker's one Predictor for ``settings``
    (model, device, fragility, review settings)."""
    model, device, fragility, review = settings
    return process_case(source, folder, worker_predictor(model, device, fragility), fragility, review)


def _triage_on_cluster(
    inputs: list[CaseInput],
    folders: list[Path],
    cluster: ClusterSettings,
    settings: tuple,
    completed: Callable[[int, str], None],
) -> None:
    """The unfinished cases on the cluster, each passed to ``completed`` as it finishes (the finished
    ones here: their report at most)."""
    pending = []
    for index, (source, folder) in enumerate(zip(inputs, folders, strict=True)):
        if is_finished(folder, source):
            completed(index, _with_report("skipped", folder, source))
        else:
            pending.append((str(index), (source, folder, settings)))
    if not pending:
        return
    with open_client(cluster) as client:
        for key, outcome in run_cases(client, cluster_case, pending):
            index = int(key)
            if isinstance(outcome, BaseException):  # its worker died on every attempt
                record_failure(folders[index], "predict", outcome)
                outcome = "failed"
            elif outcome == "skipped":  # run by a worker that died before its answer came back: Dask ran it again
                outcome = "ran"
            completed(index, outcome)


def triage(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    device: str = "auto",
    fragility: SearchConfig | None = None,
    review: ReviewSettings | None = None,
    progress: Progress | None = None,
    cluster: ClusterSettings | None = None,
) -> dict[str, Any]:
    """Run every volume of ``input_dir`` (skipping finished cases) and write the worklist.

    Args:
        input_dir: folder of volume files and DICOM folders (one case per series, see :func:`series_inputs`).
        output_dir: receives ``cases/<name>/`` per case (see :func:`case_names`), ``worklist.csv``
            and ``worklist.html``.
        model: bundled model name or package folder.
        device: ``auto``, ``cpu`` or ``cuda``.
        fragility: also run the fragility search with these settings.
        review: how the review regions are drawn, see :func:`..pipeline.predict_to_files`.
        progress: receives stage ``"triage"`` after every case, as cases finish.
        cluster: run the cases on Dask (see :mod:`.cluster`): each worker loads the model once,
            and a case whose worker dies is retried once, then listed as failed. None (or no
            workers) runs them here, one after the other.

    Returns:
        Counts (``cases``, ``ran``, ``skipped``, ``failed``: a case whose report failed counts as
        failed) and the worklist paths.

    Raises:
        SegUncertaintyError: no input, the model cannot be loaded, the output folder cannot be
            written, or another run is writing into it (no case's own failure ever does).
    """
    report = progress or Progress()
    review = review or ReviewSettings()
    inputs = find_inputs(Path(input_dir))
    names = case_names(inputs)
    output_dir = Path(output_dir)
    make_folder(output_dir)
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    with FolderLock(output_dir):
        remove_debris(output_dir)  # a killed triage's half-written worklist
        try:
            (output_dir / "cases").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write into output folder {output_dir}: {exc.strerror}") from None
        folders = [output_dir / "cases" / name for name in names]
        done = 0

        def completed(index: int, outcome: str) -> None:
            nonlocal done
            counts[outcome] += 1
            done += 1
            if done % WORKLIST_EVERY == 0:
                write_worklist(output_dir, worklist_rows(output_dir, inputs))
            report("triage", done / len(inputs), names[index])

        try:
            if cluster is not None and cluster.enabled:
                _triage_on_cluster(inputs, folders, cluster, (model, device, fragility, review), completed)
            else:
                predictor = Predictor(model, device, fragility=fragility)  # loaded once for every case
                for index, (source, folder) in enumerate(zip(inputs, folders, strict=True)):
                    completed(index, process_case(source, folder, predictor, fragility, review))
        finally:  # also when cancelled: the worklist shows what is done
            write_worklist(output_dir, worklist_rows(output_dir, inputs))
    return {
        "cases": len(inputs),
        **counts,
        "worklist_csv": str(output_dir / "worklist.csv"),
        "worklist_html": str(output_dir / "worklist.html"),
    }
