"""Wall time and peak memory of ``seguncertainty predict`` by volume size, backbone alone vs with the head.

Volumes come from ``benchmarks/volumes.py`` (the demo scene, mirror-tiled up to a CT-sized
512 x 512 x 300). Each run is a fresh process (the peak memory is that process's maximum resident
set, imports and model included); for every volume the modes run back to back in this one
invocation, so their rows compare on the same machine and load.

Usage::

    python benchmarks/predict_cost.py [--device cpu] [--sizes demo,256,ct] [--uncertainty none,segwithu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT
from volumes import write_input


def run_predict(path: Path, out: Path, device: str, uncertainty: str, extra: tuple[str, ...] = ()) -> dict:
    """``seguncertainty predict`` in a fresh process; its summary plus the process's wall time (outputs removed)."""
    command = [sys.executable, "-m", "SegUncertaintyLib.cli", "predict", "--input", str(path)]
    command += ["--output-dir", str(out), "--device", device, "--uncertainty", uncertainty, "--progress", "none"]
    command += list(extra)
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary = json.loads((out / "summary.json").read_text())
    for file in out.iterdir():
        file.unlink()
    return {"process_wall_s": round(wall, 2), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="demo,256,ct")
    parser.add_argument("--uncertainty", default="none,segwithu", help="modes to run for every volume")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.sizes.split(","):
            path = write_input(name, folder)
            for mode in args.uncertainty.split(","):
                summary = run_predict(path, folder / "out", args.device, mode)
                model_shape = summary["model_grid"]["shape_kji"]
                rows.append(
                    {
                        "volume": name,
                        "uncertainty": mode,
                        "shape_kji": summary["input"]["geometry"]["shape_kji"],
                        "spacing_mm": summary["input"]["geometry"]["spacing_mm"],
                        "model_grid_kji": model_shape,
                        "megavoxels_model": round(float(np.prod(model_shape)) / 1e6, 2),
                        "process_wall_s": summary["process_wall_s"],
                        "inference_s": summary["timings_s"]["inference"],
                        "peak_memory_mb": summary["peak_memory_mb"],
                        "device": summary["device"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}\n"
    )
    print(
        "| volume | input (k, j, i) | spacing (mm) | model grid | uncertainty | wall (s) | inference (s) "
        "| s per model Mvox | peak memory (MiB) | memory / backbone alone |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    alone = {r["volume"]: r for r in rows if r["uncertainty"] == "none"}
    for r in rows:
        base = alone.get(r["volume"], r)
        print(
            f"| {r['volume']} | {tuple(r['shape_kji'])} | {tuple(round(s, 2) for s in r['spacing_mm'])} | "
            f"{tuple(r['model_grid_kji'])} | {r['uncertainty']} | {r['process_wall_s']:.1f} | {r['inference_s']:.1f} | "
            f"{r['inference_s'] / r['megavoxels_model']:.2f} | {r['peak_memory_mb']:.0f} | "
            f"{r['peak_memory_mb'] / base['peak_memory_mb']:.2f} |"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
