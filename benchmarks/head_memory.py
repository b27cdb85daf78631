"""Peak memory of a predict with the head in slabs (now) against the head in one pass (before), side by side.

    python benchmarks/head_memory.py [--model deepbet] [--input Resources/samples/itk-t1-head.nii.gz] [--repeats 3]

Each run is a fresh process (peak memory is per process) that runs ``predict`` on the input with
the model's SegWithU head; ``one pass`` gives :meth:`SegWithUHead.maps` a slab as large as the
window, which is what the head did before (every voxel-wise temporary of the whole window at
once). The runs are interleaved; the table gives the medians, the ratio, and whether the outputs
of the two are the same to the bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT  # first: puts the repository on the import path

CHILD = """
import functools, json, sys
sys.path.insert(0, sys.argv[1])
from SegUncertaintyLib.segwithu.network import SegWithUHead
if sys.argv[5] == "one pass":
    SegWithUHead.maps = functools.partialmethod(SegWithUHead.maps, slab_voxels=2**62)
from SegUncertaintyLib.pipeline import predict_to_files
summary = predict_to_files(sys.argv[2], sys.argv[3], sys.argv[4], "cpu").summary
print(json.dumps({"peak_mb": summary.peak_memory_mb, "inference_s": summary.timings_s["inference"]}))
"""
MODES = ("one pass", "slabs")


def run(mode: str, source: str, out: Path, model: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), source, str(out), model, mode], capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def same_outputs(a: Path, b: Path) -> bool:
    from SegUncertaintyLib.io import read_volume

    files = sorted(p.name for p in a.glob("*.nrrd"))
    return files == sorted(p.name for p in b.glob("*.nrrd")) and all(
        np.array_equal(read_volume(a / f, allow_constant=True).array, read_volume(b / f, allow_constant=True).array)
        for f in files
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deepbet")
    parser.add_argument("--input", default=str(ROOT / "Resources" / "samples" / "itk-t1-head.nii.gz"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for mode in MODES:
                runs[mode].append(run(mode, args.input, Path(work) / mode, args.model))
        identical = same_outputs(Path(work) / MODES[0], Path(work) / MODES[1])
    peak = {mode: statistics.median(r["peak_mb"] for r in rs) for mode, rs in runs.items()}
    seconds = {mode: statistics.median(r["inference_s"] for r in rs) for mode, rs in runs.items()}
    print(f"{args.model} on {Path(args.input).name}, median of {args.repeats} fresh processes each\n")
    print("| head | peak memory (MiB) | inference (s) |")
    print("|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {peak[mode]:.0f} | {seconds[mode]:.1f} |")
    print(
        f"\nslabs / one pass: memory {peak['slabs'] / peak['one pass']:.2f}, inference time "
        f"{seconds['slabs'] / seconds['one pass']:.2f}; outputs identical to the bit: {identical}"
    )


if __name__ == "__main__":
    main()
