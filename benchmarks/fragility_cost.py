"""Cost of the fragility search as a multiple of one plain inference on the same volume, by trainable part and budget.

In one process, for each volume of ``--sizes`` (``benchmarks/volumes.py``: the demo scene, one nodule;
``128`` and ``256`` mirror-tile it, so they hold about 8 and 60 nodules), the plain inference
(``predict_volume``, the backbone alone) and the search variants alternate ``--repeats`` times; the
figure is the median time of (inference + search) over the median plain time. The search's time
includes building the searcher (the replay set's trunk pass), as every ``predict --fragility`` does.
Peak memory is measured per variant in a fresh process (``seguncertainty predict``), as the ratio to
``--uncertainty none``.

Usage::

    python benchmarks/fragility_cost.py [--sizes demo,128] [--repeats 3] [--device cpu] [--no-memory]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from predict_cost import run_predict
from volumes import make_volume, write_input

from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.fragility.replay import load_replay
from SegUncertaintyLib.fragility.search import FragilitySearch
from SegUncertaintyLib.inference import predict_volume, resolve_device
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package

# name -> (settings, the matching predict options)
VARIANTS = {
    "default": (FragilityConfig(), ()),  # last-conv on these DynUNets
    "head": (FragilityConfig(trainable="head"), ("--fragility-trainable", "head")),
    "last-block": (FragilityConfig(trainable="last-block"), ("--fragility-trainable", "last-block")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lidc-nodule")
    parser.add_argument("--sizes", default="demo,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-process peak memory runs")
    args = parser.parse_args()
    device = resolve_device(args.device)
    package = load_package(args.model)
    network = load_backbone(package, device)
    replay = load_replay(package)
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}\n"
    )
    header = "| volume (k, j, i) | regions | variant | adversaries × steps | plain (s) | search (s) | total / plain |"
    rows = [header, "|---|---|---|---|---|---|---|"]
    memory_rows = ["| volume | variant | peak memory (MiB) | / backbone alone |", "|---|---|---|---|"]
    for size in args.sizes.split(","):
        volume = make_volume(size)
        plain, searched, summaries = [], {name: [] for name in variants}, {}
        for _ in range(args.repeats):
            start = time.perf_counter()
            reference = predict_volume(volume, package, network=network, device=device)
            plain.append(time.perf_counter() - start)
            for name, (config, _) in variants.items():
                start = time.perf_counter()
                result = FragilitySearch(package, network, replay, config, device).run(volume, reference)
                searched[name].append(time.perf_counter() - start)
                summaries[name] = result.summary
        base = statistics.median(plain)
        for name, times in searched.items():
            s = summaries[name]
            search = statistics.median(times)
            rows.append(
                f"| {size} {volume.geometry.shape} | {s['regions']} | {name} | {len(s['adversaries'])} × "
                f"{s['config']['steps']} | {base:.2f} | {search:.2f} | {(base + search) / base:.2f} |"
            )
        if not args.no_memory:
            with tempfile.TemporaryDirectory() as tmp:
                path = write_input(size, Path(tmp))
                none = run_predict(path, Path(tmp) / "out", args.device, "none")["peak_memory_mb"]
                for name, (_, options) in variants.items():
                    peak = run_predict(path, Path(tmp) / "out", args.device, "none", ("--fragility", *options))
                    mb = peak["peak_memory_mb"]
                    memory_rows.append(f"| {size} | {name} | {mb:.0f} | {mb / none:.2f} |")
                memory_rows.append(f"| {size} | backbone alone | {none:.0f} | 1.00 |")
    print("\n".join(rows))
    if not args.no_memory:
        print("\n" + "\n".join(memory_rows))


if __name__ == "__main__":
    main()
