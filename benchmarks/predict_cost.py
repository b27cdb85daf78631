"""Wall time and peak memory of ``seguncertainty predict`` on volumes of growing size.

Volumes: the bundled demo (100 x 100 x 56 at 0.7 x 0.7 x 1.25 mm), a 256^3 volume at 1 mm, and a
CT-sized 512 x 512 x 300 volume at 0.7 x 0.7 x 1.25 mm. The larger ones tile the demo scene by
mirroring, so they hold realistic lung texture, vessels and nodules. Each run is a fresh process
(the peak memory is that process's, imports included), all in one invocation of this script so
the rows compare on the same machine and load.

Usage::

    python benchmarks/predict_cost.py [--device cpu] [--sizes demo,256,ct] [--output results.json]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from SegUncertaintyLib.io import read_volume, write_volume  # noqa: E402
from SegUncertaintyLib.resources import sample_path  # noqa: E402
from SegUncertaintyLib.volume import Geometry  # noqa: E402

SIZES = {
    "demo": None,
    "256": ((256, 256, 256), (1.0, 1.0, 1.0)),
    "ct": ((300, 512, 512), (0.7, 0.7, 1.25)),
}


def make_input(name: str, folder: Path) -> Path:
    demo_path = sample_path("lidc-nodule-demo.nrrd")
    if SIZES[name] is None:
        return demo_path
    shape, spacing = SIZES[name]
    demo = read_volume(demo_path)
    reps = [int(np.ceil(s / d)) for s, d in zip(shape, demo.array.shape, strict=True)]
    # mirror the scene so tiles join without seams, then crop to the wanted size
    tiled = demo.array
    for axis, r in enumerate(reps):
        tiles = [tiled if i % 2 == 0 else np.flip(tiled, axis) for i in range(r)]
        tiled = np.concatenate(tiles, axis=axis)
    array = np.ascontiguousarray(tiled[: shape[0], : shape[1], : shape[2]]).astype(np.int16)
    geometry = Geometry(shape, spacing, demo.geometry.origin, demo.geometry.direction)
    return write_volume(array, geometry, folder / f"{name}.nrrd")


def run_predict(path: Path, out: Path, device: str) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "SegUncertaintyLib.cli",
            "predict",
            "--input",
            str(path),
            "--output-dir",
            str(out),
            "--device",
            device,
            "--progress",
            "none",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary = json.loads((out / "summary.json").read_text())
    return {"process_wall_s": round(wall, 2), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="demo,256,ct")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.sizes.split(","):
            path = make_input(name, folder)
            summary = run_predict(path, folder / f"out-{name}", args.device)
            shape = summary["input"]["geometry"]["shape_kji"]
            model_shape = summary["model_grid"]["shape_kji"]
            t = summary["timings_s"]
            rows.append(
                {
                    "volume": name,
                    "shape_kji": shape,
                    "spacing_mm": summary["input"]["geometry"]["spacing_mm"],
                    "model_grid_kji": model_shape,
                    "megavoxels_model": round(float(np.prod(model_shape)) / 1e6, 2),
                    "process_wall_s": summary["process_wall_s"],
                    "predict_total_s": t["total"],
                    "inference_s": t["inference"],
                    "peak_memory_mb": summary["peak_memory_mb"],
                    "device": summary["device"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            for f in (folder / f"out-{name}").iterdir():
                f.unlink()
    base = rows[0]
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}\n"
    )
    print(
        "| volume | input (k, j, i) | spacing (mm) | model grid | wall (s) | inference (s) | s per model Mvox "
        "| x demo time | peak memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_mvox = r["inference_s"] / r["megavoxels_model"]
        print(
            f"| {r['volume']} | {tuple(r['shape_kji'])} | {tuple(round(s, 2) for s in r['spacing_mm'])} | "
            f"{tuple(r['model_grid_kji'])} | {r['process_wall_s']:.1f} | {r['inference_s']:.1f} | {per_mvox:.2f} | "
            f"{r['process_wall_s'] / base['process_wall_s']:.1f} | {r['peak_memory_mb']:.0f} |"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
