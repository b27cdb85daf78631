"""The child process the Slicer module runs: JSON events, a clear failure message, a clean cancel of the whole tree."""

import subprocess
import sys
import textwrap
import time

import pytest

from SegUncertaintyLib.child_process import ENGINE_ROOT, PredictProcess, predict_arguments
from SegUncertaintyLib.resources import sample_path

from .launcher import interpreter_pids, is_gone, make_launcher

DEMO = sample_path("lidc-nodule-demo.nrrd")


def follow(process: PredictProcess, timeout: float = 300) -> list[dict]:
    """Poll as the module's timer does until the child is done; the events it saw."""
    events = []
    deadline = time.monotonic() + timeout
    while not process.finished():
        assert time.monotonic() < deadline, "the child did not finish"
        events += process.poll()
        time.sleep(0.05)
    return events + process.poll()


def test_arguments_for_the_module_choices(tmp_path):
    arguments = predict_arguments(DEMO, tmp_path, "lidc-nodule", "tta", True, "cpu", 0.2)
    assert arguments == [
        "--input", str(DEMO), "--output-dir", str(tmp_path), "--uncertainty", "tta", "--device", "cpu",
        "--progress", "json", "--model", "lidc-nodule", "--fragility", "--region-threshold", "0.2",
    ]  # fmt: skip
    assert "--model" not in predict_arguments(DEMO, tmp_path)


def test_a_run_reports_progress_and_its_outputs(tmp_path):
    process = PredictProcess(["predict", *predict_arguments(DEMO, tmp_path / "out", device="cpu")])
    assert process.returncode is None and not process.finished()
    process.start()
    events = follow(process)
    assert process.returncode == 0 and process.failure_message() is None
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert len(fractions) > 5 and fractions == sorted(fractions) and process.fraction == pytest.approx(1.0)
    assert events[-1]["event"] == "done" and process.outputs["regions"] == "regions.json"
    assert (tmp_path / "out" / "summary.json").exists()


def test_a_failure_gives_the_commands_message(tmp_path):
    missing = tmp_path / "no-such-scan.nrrd"
    process = PredictProcess(["predict", *predict_arguments(missing, tmp_path / "out")])
    process.start()
    assert process.wait(120) == 1
    message = process.failure_message()
    assert message.startswith("input not found") and str(missing) in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cancel_stops_the_child_and_leaves_no_outputs(tmp_path):
    out = tmp_path / "out"
    process = PredictProcess(["predict", *predict_arguments(DEMO, out, fragility=True, device="cpu")])
    process.start()
    deadline = time.monotonic() + 120
    while process.fraction < 0.1 and process.running:  # well into the run: the model is loaded and working
        assert time.monotonic() < deadline
        process.poll()
        time.sleep(0.02)
    assert process.running, "the run ended before it could be cancelled"
    process.cancel(grace_seconds=30)  # returns at once
    assert process.cancelled
    assert process.wait(60) == 143  # SIGTERM handled by the command: its staged files are removed
    assert process.failure_message() == "cancelled"
    assert not out.exists() or not any(out.iterdir())


def wait_until_working(process: PredictProcess) -> None:
    deadline = time.monotonic() + 120
    while process.fraction < 0.1 and not process.finished():
        assert time.monotonic() < deadline
        process.poll()
        time.sleep(0.02)
    assert not process.finished(), "the run ended before it could be cancelled"


@pytest.mark.parametrize("how", ["cancel", "kill"])
def test_cancel_through_a_launcher_stops_the_interpreter_it_spawned(tmp_path, monkeypatch, how):
    """As with PythonSlicer: the process started is a launcher; the interpreter is its child."""
    launcher, pid_file = make_launcher(tmp_path / "bin")
    monkeypatch.setenv("LAUNCHER_CHILD_PID_FILE", str(pid_file))
    out = tmp_path / "out"
    process = PredictProcess(["predict", *predict_arguments(DEMO, out, fragility=True, device="cpu")], str(launcher))
    process.start()
    wait_until_working(process)
    (engine,) = interpreter_pids(pid_file)
    assert not is_gone(engine) and process._process.pid != engine
    getattr(process, how)()
    process.wait(60)
    assert is_gone(engine) and process.finished() and process.failure_message() == "cancelled"
    # stopped, not run to its end: it never reported being done, nor wrote its summary
    assert process.outputs is None and not (out / "summary.json").exists()
    if how == "cancel":  # the engine itself got the signal and removed its staged files
        assert not out.exists() or not any(out.iterdir())


def test_the_end_of_its_input_stops_the_engine(tmp_path):
    """The one channel that reaches the interpreter through any launcher, on every platform."""
    out = tmp_path / "out"
    process = PredictProcess(["predict", *predict_arguments(DEMO, out, fragility=True, device="cpu")])
    process.start()
    wait_until_working(process)
    process._close_stdin()  # no signal
    assert process.wait(60) == 143 and process.outputs is None
    assert not out.exists() or not any(out.iterdir())


def test_the_engine_stops_when_its_front_end_dies(tmp_path, monkeypatch):
    """A front end that crashes (no cancel, no clean-up) leaves no engine running (its input and output end)."""
    launcher, pid_file = make_launcher(tmp_path / "bin")
    monkeypatch.setenv("LAUNCHER_CHILD_PID_FILE", str(pid_file))
    out = tmp_path / "out"
    front_end = textwrap.dedent(f"""
        import os, time
        from SegUncertaintyLib.child_process import ENGINE_ROOT, PredictProcess, predict_arguments
        process = PredictProcess(["predict", *predict_arguments({str(DEMO)!r}, {str(out)!r}, device="cpu")],
                                 {str(launcher)!r})
        process.start()
        while process.fraction < 0.1:
            process.poll()
            time.sleep(0.02)
        os._exit(1)  # a crash: nothing is cancelled or closed by hand
    """)
    subprocess.run([sys.executable, "-c", front_end], check=False, cwd=ENGINE_ROOT)
    (engine,) = interpreter_pids(pid_file)
    deadline = time.monotonic() + 60
    while not is_gone(engine):
        assert time.monotonic() < deadline, "the engine runs on without its front end"
        time.sleep(0.1)
    assert not out.exists() or not any(out.iterdir())  # it stopped as on SIGTERM: staged files removed
