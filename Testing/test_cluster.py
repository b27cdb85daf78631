"""Triage on a real Dask cluster on loopback: two worker processes, one Predictor each, a worker killed."""

import csv
import json
import os
import shutil
import signal

import pytest

from SegUncertaintyLib import triage as triage_module
from SegUncertaintyLib.cluster import ClusterSettings, open_client, run_cases, worker_predictor
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.triage import CaseInput, cluster_case, triage

TWO_WORKERS = ClusterSettings(workers=2, threads=1)


def dying_case(source, folder, settings):
    """The real case function, except that a case named ``dies*`` kills its worker process (SIGKILL).

    Every attempt leaves a line in ``attempts.txt`` beside the inputs first; ``dies-once`` kills only its
    first worker.
    """
    name = folder.name
    with open(source.path.parent / "attempts.txt", "a") as log:
        log.write(name + "\n")
    if name == "dies" or (name == "dies-once" and _attempts(source.path.parent, name) == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    return cluster_case(source, folder, settings)


def _attempts(folder, name):
    return (folder / "attempts.txt").read_text().split().count(name)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("a", "b", "dies", "dies-once"):
        shutil.copy(sample_path("lidc-nodule-demo.nrrd"), folder / f"{name}.nrrd")
    return folder


def test_a_killed_worker_loses_only_its_case_retried_once(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(triage_module, "cluster_case", dying_case)
    out = tmp_path / "out"
    seen = []
    result = triage(
        inputs, out, "lidc-nodule", "cpu", progress=lambda s, f=0.0, m=None: seen.append(m), cluster=TWO_WORKERS
    )
    assert result == {**result, "cases": 4, "ran": 3, "failed": 1, "skipped": 0}
    assert sorted(seen) == ["a", "b", "dies", "dies-once"]  # each reported once, as it finished
    assert _attempts(inputs, "dies") == 2 and _attempts(inputs, "dies-once") == 2  # retried once
    # the other cases ran (again only when the worker holding their answer died before it was fetched:
    # Dask then runs them again, and they find their outputs there)
    assert _attempts(inputs, "a") >= 1 and _attempts(inputs, "b") >= 1
    failed = json.loads((out / "cases" / "dies" / "failed.json").read_text())
    assert "died 2 times" in failed["error"] and not (out / "cases" / "dies" / "summary.json").exists()
    for name in ("a", "b", "dies-once"):
        assert (out / "cases" / name / "summary.json").is_file() and (out / "cases" / name / "report.html").is_file()
    with open(out / "worklist.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["failed", "done", "done", "done"] and rows[0]["case"] == "dies"

    # resumable as without Dask: only the failed case runs again (now with the real case function)
    monkeypatch.setattr(triage_module, "cluster_case", cluster_case)
    again = triage(inputs, out, "lidc-nodule", "cpu", cluster=TWO_WORKERS)
    assert again == {**again, "ran": 1, "skipped": 3, "failed": 0}
    assert not (out / "cases" / "dies" / "failed.json").exists()


def _predictor_builds():
    return worker_predictor.cache_info().misses


def test_each_worker_builds_one_predictor_for_all_its_cases(inputs, tmp_path):
    sources = [CaseInput(path) for path in sorted(inputs.glob("*.nrrd"))]
    settings = ("lidc-nodule", "cpu", None, 0.1)
    cases = [(str(n), (s, tmp_path / f"case-{n}", settings)) for n, s in enumerate(sources)]
    with open_client(TWO_WORKERS) as client:
        outcomes = dict(run_cases(client, cluster_case, cases))
        builds = client.run(_predictor_builds)
    assert sorted(outcomes) == [str(n) for n in range(4)] and set(outcomes.values()) == {"ran"}
    assert len(builds) == 2 and set(builds.values()) <= {0, 1} and sum(builds.values()) >= 1
    for n in range(4):
        assert (tmp_path / f"case-{n}" / "summary.json").is_file()
