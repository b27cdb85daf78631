"""What a user waits for before any work: the command's start-up, measured from outside, side by side.

    python benchmarks/startup.py [--repeats 5]

Each row is a fresh process (start-up is paid once per process), timed from outside (wall) with
its peak resident memory (the children's ``ru_maxrss``); the median of ``--repeats`` runs, the
rows interleaved so that a noisy machine hits them alike. Rows: ``--help``; refusing a missing
input, a file of another format and an output folder that is a file (all before torch is
imported); the imports the engine cannot do without (torch; torch and MONAI, whose package
imports all its submodules); and the demo, whose printed total is compared with the wall time and
whose start-up is the wall time less the prediction it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT  # first: puts the repository on the import path

from SegUncertaintyLib.resources import sample_path

MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - started
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(wall, peak_kb, result.returncode)
sys.stderr.write(result.stderr)
"""


def measure(command: list[str]) -> tuple[float, float, int, str]:
    """``(wall seconds, peak MiB, exit status, stderr)`` of one fresh process."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, cwd=ROOT)
    wall, peak_kb, status = result.stdout.split()
    return float(wall), float(peak_kb) / 1024, int(status), result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "SegUncertaintyLib"]
    demo = str(sample_path("lidc-nodule-demo.nrrd"))
    with tempfile.TemporaryDirectory() as work:
        notes = Path(work) / "notes.txt"
        notes.write_text("not a scan")
        out = Path(work) / "demo"
        rows = {
            "--help": [*cli, "--help"],
            "refuse a missing input": [*cli, "predict", "--input", f"{work}/nope.nrrd", "--output-dir", f"{work}/x"],
            "refuse another format": [*cli, "predict", "--input", str(notes), "--output-dir", f"{work}/x"],
            "refuse an output folder that is a file": [*cli, "predict", "--input", demo, "--output-dir", str(notes)],
            "import torch": [sys.executable, "-c", "import torch"],
            "import torch and MONAI": [sys.executable, "-c", "import torch, monai"],
            "demo": [*cli, "demo", "--output-dir", str(out), "--device", "cpu", "--progress", "none"],
        }
        runs: dict[str, list[tuple[float, float, float | None]]] = {name: [] for name in rows}
        for _ in range(args.repeats):
            for name, command in rows.items():
                wall, peak, status, err = measure(command)
                if name == "demo":
                    if status != 0:
                        raise SystemExit(err)
                    work_s = json.loads((out / "summary.json").read_text())["timings_s"]["total"]
                    printed = float(err.rsplit("total ", 1)[1].split(" s", 1)[0])
                    runs[name].append((wall, peak, printed, wall - work_s))
                else:
                    runs[name].append((wall, peak, None, None))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"median of {args.repeats} fresh processes each, {time.strftime('%Y-%m-%d')}\n"
    )
    print("| command | wall (s) | peak memory (MiB) | printed total (s) | start-up (s) |")
    print("|---|---|---|---|---|")
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        peak = statistics.median(v[1] for v in values)
        printed = f"{statistics.median(v[2] for v in values):.2f}" if values[0][2] is not None else "–"
        startup = f"{statistics.median(v[3] for v in values):.2f}" if values[0][3] is not None else "–"
        print(f"| {name} | {wall:.2f} | {peak:.0f} | {printed} | {startup} |")


if __name__ == "__main__":
    main()
