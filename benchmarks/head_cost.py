"""Time of one prediction with the backbone alone vs backbone + SegWithU head, in one process.

For each volume the two modes alternate (none, head, none, head, ...) so that both see the same
machine state; the figure is the ratio of their median times. Everything the front ends do is
included (resampling, normalisation, sliding window, blending, resampling back), reading and
writing files excluded. Peak memory per mode is measured in separate processes by
``benchmarks/predict_cost.py``.

Usage::

    python benchmarks/head_cost.py [--model lidc-nodule] [--sizes demo,128,256] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from volumes import make_volume  # noqa: E402

from SegUncertaintyLib.inference import predict_volume, resolve_device  # noqa: E402
from SegUncertaintyLib.model.backbones import load_backbone  # noqa: E402
from SegUncertaintyLib.model.package import load_package  # noqa: E402
from SegUncertaintyLib.segwithu.training import load_head  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lidc-nodule")
    parser.add_argument("--sizes", default="demo,128,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch

    device = resolve_device(args.device)
    package = load_package(args.model)
    backbone, head = load_backbone(package, device), load_head(package, device)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}\n"
    )
    print("| volume | model grid | backbone alone (s) | backbone + head (s) | ratio | inference-stage ratio |")
    print("|---|---|---|---|---|---|")
    for name in args.sizes.split(","):
        volume = make_volume(name)
        predict_volume(volume, package, network=backbone, head=head, device=device)  # warm-up
        times: dict[str, list[float]] = {"none": [], "head": []}
        inference: dict[str, list[float]] = {"none": [], "head": []}
        for _ in range(args.repeats):
            for mode in ("none", "head"):
                start = time.perf_counter()
                prediction = predict_volume(
                    volume, package, network=backbone, head=head if mode == "head" else None, device=device
                )
                times[mode].append(time.perf_counter() - start)
                inference[mode].append(prediction.timings["inference"])
        alone, both = statistics.median(times["none"]), statistics.median(times["head"])
        stage = statistics.median(inference["head"]) / statistics.median(inference["none"])
        grid = prediction.model_geometry.shape
        print(f"| {name} | {grid} | {alone:.2f} | {both:.2f} | {both / alone:.2f} | {stage:.2f} |", flush=True)


if __name__ == "__main__":
    main()
