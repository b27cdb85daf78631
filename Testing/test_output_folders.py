"""Output folders: oblique grids through the reports, a rerun replaces the result set, debris of killed runs,
one run at a time per folder, unique triage cases, one failing case never stops a batch, strict JSON."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from SegUncertaintyLib.errors import OutputError, SegUncertaintyError
from SegUncertaintyLib.fsutil import LOCK_FILE, FolderLock, loads_strict
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.outputs import REPLACING_FILE, StagedOutput, listed_files
from SegUncertaintyLib.reporting.case_report import grid_mismatch
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.review.session import ReviewSession
from SegUncertaintyLib.triage import CaseInput, case_names
from SegUncertaintyLib.volume import Geometry

from .helpers import oblique_grid, predict_args

REPO = Path(__file__).resolve().parents[1]
STAGING_DEBRIS = ".staging-abcd1234"
PARTIAL_DEBRIS = ".segmentation.nrrd.x1y2z3w4.partial.nrrd"


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``seguncertainty`` in this process; returns the exit status, stdout and stderr."""
    from SegUncertaintyLib.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    """The message of a failed command: exactly one line ``error: ...``, no traceback."""
    assert "Traceback" not in err and err.startswith("error: ") and err.strip().count("\n") == 0, err
    return err.strip()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The demo's nodule on the oblique grid as ``a.nrrd`` and ``a.nii.gz`` (names that collide in triage)."""
    folder = tmp_path_factory.mktemp("inputs")
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd")).array
    grid = oblique_grid()
    crop = demo[18:38, 36:64, 34:66]  # the nodule, on the fixture's (20, 28, 32) voxels
    write_volume(crop, grid, folder / "a.nrrd")
    write_volume(crop, grid, folder / "a.nii.gz")
    return folder


@pytest.fixture(scope="module")
def first_run(inputs, tmp_path_factory) -> Path:
    """``predict --report`` on the oblique NRRD input."""
    out = tmp_path_factory.mktemp("first") / "out"
    status, _, err = cli(*predict_args(inputs / "a.nrrd", out, "--report", progress="none"))
    assert status == 0, err
    return out


def test_the_inputs_are_on_the_oblique_fixture_grid(inputs, oblique_geometry):
    assert oblique_grid() == oblique_geometry
    for name in ("a.nrrd", "a.nii.gz"):
        assert read_volume(inputs / name).geometry.is_close(oblique_geometry, atol=1e-6)


def test_grids_are_compared_with_a_tolerance(oblique_geometry):
    g = oblique_geometry
    float32 = Geometry(
        g.shape,
        tuple(np.float32(g.spacing)),
        tuple(np.float32(np.add(g.origin, 0.0123))),
        tuple(np.float32(g.direction)),
    )
    exact = Geometry(g.shape, g.spacing, tuple(np.add(g.origin, 0.0123)), g.direction)
    assert grid_mismatch(exact, float32) is None  # NIfTI's float32 storage
    nudged = Geometry(g.shape, tuple(np.add(g.spacing, 4e-16)), g.origin, tuple(np.add(g.direction, 4e-16)))
    assert grid_mismatch(g, nudged) is None  # an NRRD round trip
    moved = Geometry(g.shape, g.spacing, tuple(np.add(g.origin, [0.001, 0, 0])), g.direction)
    assert "origin differs by up to 0.001 mm" in grid_mismatch(g, moved)
    assert "size" in grid_mismatch(g, Geometry((20, 28, 31), g.spacing, g.origin, g.direction))


def test_predict_report_on_an_oblique_input(first_run, inputs):
    assert (first_run / "report.html").is_file()
    assert hidden(first_run) == []  # no staging folder, no lock file, no partial file
    summary = loads_strict((first_run / "summary.json").read_text())  # strict JSON
    assert set(listed_files(summary)) | {"summary.json", "report.html"} == {p.name for p in first_run.iterdir()}
    labels = read_volume(first_run / "segmentation.nrrd", allow_constant=True)
    assert labels.geometry.is_close(read_volume(inputs / "a.nrrd").geometry, atol=1e-6)


def test_report_on_an_oblique_input(first_run, inputs):
    (first_run / "report.html").unlink()
    status, _, err = cli("report", "--run-dir", str(first_run), "--progress", "none")
    assert status == 0, err
    status, _, err = cli("report", "--run-dir", str(first_run), "--input", str(inputs / "a.nrrd"))
    assert status == 0 and "Traceback" not in err and (first_run / "report.html").is_file()
    assert hidden(first_run) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: "{not json", "cannot read"),
        (lambda s: "", "cannot read"),
        (lambda s: json.dumps({**s, "classes": [{**s["classes"][0], "volume_ml": float("nan")}]}), "NaN"),
        (lambda s: json.dumps({k: v for k, v in s.items() if k != "outputs"}), "outputs missing"),
        (lambda s: json.dumps({**s, "outputs": {"probabilities": {}}}), "outputs.segmentation missing"),
        (lambda s: json.dumps([1, 2]), "not a summary seguncertainty predict wrote"),
        (lambda s: json.dumps({**s, "outputs": {**s["outputs"], "segmentation": "gone.nrrd"}}), "but missing"),
    ],
)
def test_report_on_a_damaged_summary(first_run, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(first_run, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(damage(summary))
    status, _, err = cli("report", "--run-dir", str(run), "--progress", "none")
    assert status == 1 and message in one_line_error(err) and "please report" not in err


def test_a_rerun_replaces_the_whole_result_set(first_run, inputs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    before = {p.name for p in out.iterdir()}
    (out / "notes.txt").write_text("the user's own file")
    (out / "mine.nrrd").write_bytes((out / "segmentation.nrrd").read_bytes())  # a user's file, not listed
    (out / STAGING_DEBRIS).mkdir()  # a killed run's
    (out / STAGING_DEBRIS / "segmentation.nrrd").write_text("half")
    (out / PARTIAL_DEBRIS).write_text("half")
    (out / LOCK_FILE).write_text('{"pid": 999999, "since": "yesterday"}\n')  # a killed run's lock file: no lock
    status, _, err = cli(*predict_args(inputs / "a.nrrd", out, "--uncertainty", "msp", "--format", "nii.gz"))
    assert status == 0, err
    summary = loads_strict((out / "summary.json").read_text())
    left = {p.name for p in out.iterdir()}
    assert left == listed_files(summary) | {"summary.json", "notes.txt", "mine.nrrd"}  # nothing of the first run
    assert "report.html" in before and "error_probability.nrrd" in before
    assert not left & (before - {"summary.json", "regions.json"})
    assert all(name.endswith(".nii.gz") for name in listed_files(summary) - {"regions.json"})
    # the NIfTI outputs (float32 geometry) of an oblique input go through the report
    status, _, err = cli("report", "--run-dir", str(out), "--progress", "none")
    assert status == 0, err
    assert hidden(out) == []


def test_staged_output_says_which_files_it_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = {"tool": "seguncertainty", "outputs": {"segmentation": "seg.nrrd", "maps": {"fragile": "fragile.nrrd"}}}
    (out / "summary.json").write_text(json.dumps(old))
    for name in ("seg.nrrd", "fragile.nrrd", "report.html", "thumbnail.png", "user.nrrd"):
        (out / name).write_text(name)
    with StagedOutput(out) as staged:
        staged.stage("seg.nrrd").write_text("new")
        removed = staged.commit({"tool": "seguncertainty", "outputs": {"segmentation": "seg.nrrd"}})
    assert removed == staged.removed == ["fragile.nrrd", "report.html", "thumbnail.png"]
    assert sorted(p.name for p in out.iterdir()) == ["seg.nrrd", "summary.json", "user.nrrd"]
    assert (out / "seg.nrrd").read_text() == "new"
    # a summary that is not seguncertainty's lists nothing that may be removed
    (out / "summary.json").write_text(json.dumps({"outputs": {"segmentation": "user.nrrd"}}))
    with StagedOutput(out) as staged:
        assert staged.commit({"tool": "seguncertainty", "outputs": {}}) == []
    assert (out / "user.nrrd").is_file() and (out / "seg.nrrd").is_file()


def test_a_killed_commit_is_finished_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("old.nrrd", "user.txt"):
        (out / name).write_text(name)
    (out / REPLACING_FILE).write_text(json.dumps({"files": ["old.nrrd"]}))  # killed after removing summary.json
    with StagedOutput(out) as staged:
        assert staged.commit({"tool": "seguncertainty", "outputs": {}}) == ["old.nrrd"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "user.txt"]


def test_a_summary_with_nan_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    with StagedOutput(out) as staged:
        staged.stage("seg.nrrd").write_text("first")
        staged.commit({"tool": "seguncertainty", "outputs": {"segmentation": "seg.nrrd"}})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SegUncertaintyError, match=r"nan at classes\[0\]\.volume_ml"), StagedOutput(out) as staged:
        staged.stage("seg.nrrd").write_text("second")
        staged.commit({"tool": "seguncertainty", "classes": [{"volume_ml": float("nan")}], "outputs": {}})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.fixture
def lock_holder():
    """Start a process that holds the lock of a folder until it is killed: ``start(folder) -> Popen``."""
    started = []

    def start(folder: Path) -> subprocess.Popen:
        code = (
            "import sys; from SegUncertaintyLib.fsutil import FolderLock; "
            "FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_run_into_a_folder_is_refused_and_a_killed_one_leaves_no_lock(
    first_run, inputs, tmp_path, lock_holder
):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    (out / STAGING_DEBRIS).mkdir()  # the live run's staging: not debris while it runs
    holder = lock_holder(out)
    before = {p.name for p in out.iterdir()}
    status, _, err = cli(*predict_args(inputs / "a.nrrd", out, progress="none"))
    expected = rf"^error: another seguncertainty run is writing into {re.escape(str(out))} \(pid {holder.pid} since "
    assert status == 1 and re.match(expected, one_line_error(err))
    assert {p.name for p in out.iterdir()} == before  # nothing written, nothing cleaned
    status, _, err = cli("report", "--run-dir", str(out), "--progress", "none")
    assert status == 1 and "another seguncertainty run is writing into" in one_line_error(err)

    triage_out = tmp_path / "triage"
    triage_out.mkdir()
    lock_holder(triage_out)
    args = ["triage", "--input-dir", str(inputs), "--output-dir", str(triage_out), "--device", "cpu"]
    status, _, err = cli(*args, "--progress", "none")
    assert status == 1 and "another seguncertainty run is writing into" in one_line_error(err)
    assert sorted(p.name for p in triage_out.iterdir()) == [LOCK_FILE]  # no case started

    holder.kill()  # killed: the operating system releases its lock; its file stays, harmlessly
    holder.wait()
    assert (out / LOCK_FILE).is_file()
    with StagedOutput(out) as staged:  # the next run gets the folder and cleans the dead run's staging
        assert staged.debris == [STAGING_DEBRIS]
    assert hidden(out) == []  # and leaves no lock file


def test_two_locks_on_one_folder_exclude_each_other_in_one_process(tmp_path):
    with FolderLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(OutputError, match=rf"\(pid {os.getpid()} since "):
            FolderLock(tmp_path).acquire()
        with pytest.raises(OutputError, match="another seguncertainty run"):
            StagedOutput(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()
    with FolderLock(tmp_path):  # free again
        pass


def test_an_output_folder_that_is_a_file_is_refused_with_what_it_is(tmp_path):
    taken = tmp_path / "out"
    taken.write_text("not a folder")
    with pytest.raises(OutputError, match=r"out is a file, not a folder"):
        StagedOutput(taken)
    assert taken.read_text() == "not a folder"


def test_case_names_are_unique_and_deterministic():
    def names(*files: str) -> list[str]:
        return case_names([CaseInput(Path(n)) for n in files])

    assert names("A.mha", "a.nii.gz", "a.nrrd", "b.nrrd", "c", "c.nii", "c.nii.gz") == [
        "A.mha",
        "a.nii.gz",
        "a.nrrd",
        "b",
        "c",
        "c.nii",
        "c.nii.gz",
    ]
    # a whole file name can itself collide with another's name: numbered, in input order
    assert names("x.nrrd.nii.gz", "x.nrrd", "x.nrrd.mha") == ["x.nrrd.nii.gz", "x", "x.nrrd.mha"]
    assert names("x.nrrd", "x.nrrd.nii", "x.nii") == ["x.nrrd", "x.nrrd-2", "x.nii"]
    # the series of one DICOM folder: the folder's name and the series' label
    series = [
        CaseInput(Path("study"), "1.2.3", "lung"),
        CaseInput(Path("study"), "1.2.4", "soft"),
        CaseInput(Path("x")),
    ]
    assert case_names(series) == ["study-lung", "study-soft", "x"]


def read_worklist(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def counts(stdout: str) -> dict[str, int]:
    done = json.loads(stdout.strip().splitlines()[-1])
    assert done["event"] == "done"
    return {key: done["outputs"][key] for key in ("cases", "ran", "skipped", "failed")}


def linked_reports(out: Path) -> list[Path]:
    page = (out / "worklist.html").read_text(encoding="utf-8")
    return [out / unquote(href) for href in re.findall(r"href='([^']+)'", page)]


def test_triage_of_colliding_oblique_cases_survives_failing_cases(inputs, tmp_path):
    source = tmp_path / "inputs"
    shutil.copytree(inputs, source)
    (source / "broken.nrrd").write_text("not a volume")  # fails when read
    (source / "crash.nrrd").write_text("not a volume either")  # made to fail with a bug, below
    out = tmp_path / "triage"
    (out / "cases").mkdir(parents=True)
    (out / ".worklist.csv.abcd1234.partial.csv").write_text("half")  # a killed triage's
    args = ["triage", "--input-dir", str(source), "--output-dir", str(out), "--device", "cpu", "--progress", "json"]

    import SegUncertaintyLib.triage as triage_module

    real_predict, real_report = triage_module.predict_to_files, triage_module.save_report

    def predict(source_path, *rest, **options):
        if Path(source_path).name == "crash.nrrd":
            raise ZeroDivisionError("a bug")
        return real_predict(source_path, *rest, **options)

    def report(view):
        if view.run_dir.name == "a.nii.gz":
            raise RuntimeError("the figure failed")
        return real_report(view)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(triage_module, "predict_to_files", predict)
        patch.setattr(triage_module, "save_report", report)
        status, stdout, err = cli(*args)
    assert status == 0, err
    assert counts(stdout) == {"cases": 4, "ran": 1, "skipped": 0, "failed": 3}
    rows = read_worklist(out / "worklist.csv")
    assert set(rows) == {"a.nrrd", "a.nii.gz", "broken", "crash"}  # two cases, not one shared folder
    assert rows["a.nrrd"]["status"] == "done" and rows["a.nrrd"]["report"] == "cases/a.nrrd/report.html"
    assert rows["a.nii.gz"]["status"] == "failed" and "the figure failed" in rows["a.nii.gz"]["error"]
    assert rows["a.nii.gz"]["report"] == "" and not (out / "cases" / "a.nii.gz" / "report.html").exists()
    assert "cannot read" in rows["broken"]["error"]
    assert "unexpected ZeroDivisionError: a bug" in rows["crash"]["error"]
    record = loads_strict((out / "cases" / "crash" / "failed.json").read_text())
    assert "Traceback" in record["traceback"] and record["stage"] == "predict"
    assert linked_reports(out) == [out / "cases" / "a.nrrd" / "report.html"]  # only reports that were written
    for name in ("a.nrrd", "a.nii.gz"):  # each case holds its own input's results, on its oblique grid
        summary = loads_strict((out / "cases" / name / "summary.json").read_text())
        assert Path(summary["input"]["path"]).name == name
        labels = read_volume(out / "cases" / name / "segmentation.nrrd", allow_constant=True)
        assert labels.geometry.is_close(oblique_grid(), atol=1e-6)

    status, stdout, err = cli(*args)  # resumed: the same names; the report is tried again, and written
    assert status == 0 and counts(stdout) == {"cases": 4, "ran": 0, "skipped": 2, "failed": 2}
    rows = read_worklist(out / "worklist.csv")
    assert [rows[n]["status"] for n in ("a.nrrd", "a.nii.gz", "broken", "crash")] == ["done", "done"] + ["failed"] * 2
    assert "cannot read" in rows["crash"]["error"]
    reports = linked_reports(out)
    assert len(reports) == 2 and all(path.is_file() for path in reports)
    assert not (out / "cases" / "a.nii.gz" / "failed.json").exists()
    assert hidden(out) == [] and not [p for p in (out / "cases").glob("*/.*")]


def test_a_review_session_removes_orphan_partial_files(tmp_path, oblique_geometry):
    original = write_volume(np.zeros(oblique_geometry.shape, np.uint8), oblique_geometry, tmp_path / "seg.nrrd")
    folder = tmp_path / "review"
    session = ReviewSession.start(folder, original, [])
    (folder / "corrections").mkdir()
    orphans = [".review.json.k3j4h5g6.partial.json", "corrections/.segmentation_v001.nrrd.abcdefgh.partial.nrrd"]
    for name in orphans:
        (folder / name).write_text("half")
    (folder / "notes.partial.txt").write_text("the reviewer's")
    reopened = ReviewSession.load(folder)
    assert reopened.removed_partials == sorted(orphans) and reopened.version == session.version
    assert sorted(p.name for p in folder.iterdir()) == ["corrections", "notes.partial.txt", "review.json"]
    assert not any((folder / "corrections").iterdir())
    loads_strict((folder / "review.json").read_text())
