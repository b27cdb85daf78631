"""Triage and evaluation on a real Dask cluster on loopback: two worker processes, one Predictor each, a
worker killed."""

import csv
import functools
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from SegUncertaintyLib import triage as triage_module
from SegUncertaintyLib.cluster import ClusterSettings, open_client, run_cases, worker_predictor
from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.errors import SegUncertaintyError
from SegUncertaintyLib.evaluation import harness
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.guarantees import ReviewSettings
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
    settings = ("lidc-nodule", "cpu", None, ReviewSettings(threshold=0.1))
    cases = [(str(n), (s, tmp_path / f"case-{n}", settings)) for n, s in enumerate(sources)]
    with open_client(TWO_WORKERS) as client:
        outcomes = dict(run_cases(client, cluster_case, cases))
        builds = client.run(_predictor_builds)
    assert sorted(outcomes) == [str(n) for n in range(4)] and set(outcomes.values()) == {"ran"}
    assert len(builds) == 2 and set(builds.values()) <= {0, 1} and sum(builds.values()) >= 1
    for n in range(4):
        assert (tmp_path / f"case-{n}" / "summary.json").is_file()


def _dies_on(dying, case, methods, margin_mm, settings):
    """The real case function, except that the case ``dying`` kills its worker (SIGKILL)."""
    if case.case_id == dying:
        os.kill(os.getpid(), signal.SIGKILL)
    return REAL_CASE_FUNCTION(case, methods, margin_mm, settings)


REAL_CASE_FUNCTION = harness._evaluate_on_worker


def test_evaluate_on_two_workers_gives_the_figures_of_one_process(lidc_cache, bundled_package, monkeypatch):
    cases = load_dataset_cases("lidc", "test", lidc_cache, 3)
    methods = ["segwithu", "msp", "tta"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs: the same sums in the same order
    try:
        alone = evaluate_methods(cases, bundled_package, methods, "cpu", samples=2)
    finally:
        torch.set_num_threads(threads)
    seen = []
    spread = evaluate_methods(
        cases, bundled_package, methods, "cpu", 2, progress=lambda s, f, m=None: seen.append(m), cluster=TWO_WORKERS
    )
    assert sorted(seen) == sorted(c.case_id for c in cases)  # reported as each finished
    for mine, theirs in zip(spread.case_rows, alone.case_rows, strict=True):  # folded in split order
        assert (mine["case_id"], mine["method"]) == (theirs["case_id"], theirs["method"])
        figures = {k: v for k, v in theirs.items() if k not in ("case_id", "method")}
        assert {k: mine[k] for k in figures} == pytest.approx(figures, rel=0, abs=0, nan_ok=True)
    for key, pooled in alone.pooled.items():
        for a, b in zip(spread.pooled[key].arrays(), pooled.arrays(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert spread.forward_passes == alone.forward_passes == {"segwithu": 1, "msp": 1, "tta": 2}

    # a case whose worker dies on both attempts stops the evaluation, naming the case
    monkeypatch.setattr(harness, "_evaluate_on_worker", functools.partial(_dies_on, cases[1].case_id))
    with pytest.raises(
        SegUncertaintyError, match=f"case {cases[1].case_id}: the worker running this case died 2 times"
    ):
        evaluate_methods(cases, bundled_package, ["msp"], "cpu", cluster=TWO_WORKERS)
