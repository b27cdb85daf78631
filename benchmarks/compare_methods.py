"""Every uncertainty method in one run: quality on the LIDC test split, and cost per volume.

Quality: ``evaluate_methods`` (the engine behind ``seguncertainty evaluate``) runs the SegWithU
head, max-softmax, entropy, MC dropout, test-time augmentation, the deep ensemble and the
fragility search over the split and scores them against the 4 raters (Dice, GED², HM-IoU, volume
CRPS, ECE, Brier, NLL, error-detection AUROC / AUPRC / AURC / E-AURC, NCC with rater disagreement,
and QUAM-SM's PCC / R² / soft Dice of each epistemic, aleatoric and total map against the raters'
variability).

Cost: ``seguncertainty predict --uncertainty M`` (``--uncertainty none --fragility`` for the
search) on each volume of ``--cost-sizes``, one fresh process per run (peak memory is that
process's maximum resident set), methods interleaved within each repeat so that they share the
machine's state; the median over repeats is reported, with the ratio to the backbone alone
(``--uncertainty none``) from the same invocation.

Usage::

    python benchmarks/compare_methods.py [--quick] [--limit N] [--samples S] [--cost-sizes demo,128]
        [--repeats 3] [--output-dir DIR]

``--quick`` (5 cases, 3 samples, the demo volume once) finishes in a few minutes: a smoke run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from common import add_model_and_data_options  # first: puts the repository on the import path
from predict_cost import run_predict
from volumes import write_input

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import EVALUATION_METHODS, evaluate_methods
from SegUncertaintyLib.evaluation.report import markdown, write_report
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.outputs import StagedOutput
from SegUncertaintyLib.progress import TextProgress


def cost_rows(methods: list[str], sizes: list[str], repeats: int, samples: int | None, device: str) -> list[dict]:
    """Median wall time, inference time, peak memory and passes of ``predict`` per (volume, method)."""
    extra = ("--samples", str(samples)) if samples else ()
    modes = ["none", *methods]
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in sizes:
            path = write_input(size, folder)
            for _ in range(repeats):
                for mode in modes:
                    if mode == "fragility":  # the search on top of a plain backbone pass
                        summary = run_predict(path, folder / "out", device, "none", ("--fragility",))
                    else:
                        options = extra if mode in ("mc-dropout", "tta") else ()
                        summary = run_predict(path, folder / "out", device, mode, options)
                    runs.setdefault((size, mode), []).append(summary)
    rows = []
    for (size, mode), summaries in runs.items():
        rows.append(
            {
                "volume": size,
                "method": mode,
                "shape_kji": summaries[0]["input"]["geometry"]["shape_kji"],
                "wall_s": float(np.median([s["process_wall_s"] for s in summaries])),
                "inference_s": float(np.median([s["timings_s"]["inference"] for s in summaries])),
                "peak_memory_mb": float(np.median([s["peak_memory_mb"] for s in summaries])),
                "forward_passes": summaries[0]["forward_passes"],
            }
        )
    return rows


def cost_markdown(rows: list[dict]) -> str:
    base = {r["volume"]: r for r in rows if r["method"] == "none"}
    lines = [
        "| volume (k, j, i) | method | forward passes | wall (s) | wall / backbone alone | inference (s) "
        "| peak memory (MiB) | memory / backbone alone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base[r["volume"]]
        lines.append(
            f"| {r['volume']} {tuple(r['shape_kji'])} | {r['method']} | {r['forward_passes']} | {r['wall_s']:.1f} | "
            f"{r['wall_s'] / b['wall_s']:.2f} | {r['inference_s']:.1f} | {r['peak_memory_mb']:.0f} | "
            f"{r['peak_memory_mb'] / b['peak_memory_mb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.add_argument("--methods", default=",".join(EVALUATION_METHODS))
    parser.add_argument("--samples", type=int, default=None, help="MC dropout / TTA passes (default 10 / 8)")
    parser.add_argument("--cost-sizes", default="demo,128", help="volumes for the cost table (benchmarks/volumes.py)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=None, help="also write the evaluation tables and plots")
    parser.add_argument("--quick", action="store_true", help="5 cases, 3 samples, demo volume once")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.samples, args.cost_sizes, args.repeats = args.limit or 5, args.samples or 3, "demo", 1
    import torch

    started = time.perf_counter()
    methods = [m for m in args.methods.split(",") if m]
    package = load_package(args.model)
    cases = load_dataset_cases("lidc", args.split, args.cache_dir, args.limit)
    evaluation = evaluate_methods(cases, package, methods, args.device, args.samples, progress=TextProgress())
    title = f"{package.card.name} on LIDC {args.split}, every method in one run"
    if args.output_dir:
        with StagedOutput(args.output_dir) as out:
            out.commit(write_report(evaluation, out.stage, title))
    costs = cost_rows(methods, args.cost_sizes.split(","), args.repeats, args.samples, args.device)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}; samples: {args.samples or 'defaults (10 / 8)'}\n"
    )
    print(markdown(evaluation, title))
    print(f"### Cost per volume (median of {args.repeats}, one process per run)\n")
    print(cost_markdown(costs))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
