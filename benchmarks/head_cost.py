"""Time of one prediction with the backbone alone vs backbone + SegWithU head, in one process.

For each volume the two modes alternate (none, head, none, head, ...) so that both see the same
machine state; the figure is the ratio of their median times. Everything the front ends do is
included (resampling, normalisation, sliding window, blending, resampling back), reading and
writing files excluded. Peak memory per mode is measured in separate processes by
``benchmarks/predict_cost.py``.

With ``--general-path`` a third mode runs the head through its any-class element-wise path
(``SegWithUHead._any_classes``) instead of the two-class one, alternating with the other two, so
that the two-class special case is measured against what it replaced.

With ``--filters`` (e.g. ``32,64,128,256``) the bundled model's architecture is rebuilt with those
widths and random weights, with a fresh head on the matching taps: the time of a forward pass does
not depend on the weights, so this shows how the ratio changes with the backbone's size.

Usage::

    python benchmarks/head_cost.py [--model lidc-nodule] [--sizes demo,128,256] [--repeats 5] [--device cpu]
                                   [--filters 32,64,128,256] [--general-path]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from volumes import make_volume

from SegUncertaintyLib.inference import predict_volume, resolve_device
from SegUncertaintyLib.model.backbones import build_backbone, dynunet_architecture, dynunet_taps, load_backbone
from SegUncertaintyLib.model.package import ModelPackage, load_package
from SegUncertaintyLib.segwithu.network import HeadConfig, SegWithUHead
from SegUncertaintyLib.segwithu.package import load_head


def untrained_pair(package: ModelPackage, filters: tuple[int, ...], device: torch.device) -> tuple:
    """A randomly initialised backbone of the package's kind with ``filters``, and a fresh head on its taps."""
    card = package.card
    card.architecture = dynunet_architecture(card.in_channels, card.num_classes, filters)
    card.taps = dynunet_taps(filters)
    config = HeadConfig(**{**card.head.config, "taps": card.taps})
    return build_backbone(card.architecture).to(device).eval(), SegWithUHead(config).to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lidc-nodule")
    parser.add_argument("--sizes", default="demo,128,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--filters", default=None, help="time an untrained backbone of these widths instead")
    parser.add_argument("--general-path", action="store_true", help="also time the head's any-class path")
    args = parser.parse_args()

    device = resolve_device(args.device)
    package = load_package(args.model)
    if args.filters:
        backbone, head = untrained_pair(package, tuple(int(f) for f in args.filters.split(",")), device)
    else:
        backbone, head = load_backbone(package, device), load_head(package, device)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}\n"
    )
    modes = ("none", "head", "general") if args.general_path else ("none", "head")
    general = SegWithUHead(head.config).to(device).eval()
    general.load_state_dict(head.state_dict())
    general._two_classes = general._any_classes  # the element-wise path every class count takes
    columns = "| volume | model grid | backbone alone (s) | backbone + head (s) | ratio | inference-stage ratio |"
    print(columns + (" head, any-class path (s) | its ratio |" if args.general_path else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if args.general_path else ""))
    for name in args.sizes.split(","):
        volume = make_volume(name)
        predict_volume(volume, package, network=backbone, head=head, device=device)  # warm-up
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        inference: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):
            for mode in modes:
                start = time.perf_counter()
                used = {"none": None, "head": head, "general": general}[mode]
                prediction = predict_volume(volume, package, network=backbone, head=used, device=device)
                times[mode].append(time.perf_counter() - start)
                inference[mode].append(prediction.timings["inference"])
        alone, both = statistics.median(times["none"]), statistics.median(times["head"])
        stage = statistics.median(inference["head"]) / statistics.median(inference["none"])
        grid = prediction.model_geometry.shape
        row = f"| {name} | {grid} | {alone:.2f} | {both:.2f} | {both / alone:.2f} | {stage:.2f} |"
        if args.general_path:
            slow = statistics.median(times["general"])
            row += f" {slow:.2f} | {slow / alone:.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
