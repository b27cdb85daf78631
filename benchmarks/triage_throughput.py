"""Triage throughput: one Predictor for every case (now) against a Predictor built per case (before).

    python benchmarks/triage_throughput.py --input-dir lidc-test [--limit N] [--fragility] [--model lidc-nodule]

``lidc-test`` is what ``seguncertainty export-cases --split test --output-dir lidc-test`` writes.
Each case goes through what ``triage`` does for it (predict into the case folder, then its report
and thumbnail), twice, in this one process: once with a Predictor made for that case alone (every
network, the quality predictors and the fragility search's replay trunk pass loaded again, as
``triage`` did before it shared one) and once with the run's shared Predictor. The two alternate
which goes first from case to case, so that they share the machine's state. Prints cases per
minute of each, their ratio, and whether every case's segmentation and risk map are the same to the bit.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from common import ROOT  # noqa: F401  (first: puts the repository on the import path)

from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.review.regions import DEFAULT_THRESHOLD
from SegUncertaintyLib.triage import case_names, find_inputs, finish_case, run_case

MODES = ("a Predictor per case (before)", "one Predictor (now)")


def voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-dir", type=Path, required=True)
    parser.add_argument("--model", default="lidc-nodule")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--fragility", action="store_true", help="also run the fragility search on every case")
    args = parser.parse_args()
    import torch

    inputs = find_inputs(args.input_dir)[: args.limit]
    names = case_names(inputs)
    config = FragilityConfig() if args.fragility else None
    seconds = dict.fromkeys(MODES, 0.0)
    outcomes = {mode: [] for mode in MODES}
    identical = 0
    with tempfile.TemporaryDirectory() as tmp:
        shared = Predictor(args.model, args.device, fragility=config)
        for n, (source, name) in enumerate(zip(inputs, names, strict=True)):
            order = MODES if n % 2 == 0 else MODES[::-1]
            for mode in order:
                folder = Path(tmp) / str(MODES.index(mode)) / name
                start = time.perf_counter()
                predictor = shared if mode == MODES[1] else Predictor(args.model, args.device, fragility=config)
                outcome = run_case(source, folder, predictor, config, DEFAULT_THRESHOLD)
                if outcome == "ran":
                    finish_case(folder, source)
                seconds[mode] += time.perf_counter() - start
                outcomes[mode].append(outcome)
            same = all(  # read as plain arrays: an empty segmentation is a result here, not a bad input
                np.array_equal(*(voxels(Path(tmp) / str(i) / name / file) for i in range(2)))
                for file in ("segmentation.nrrd", "error_probability.nrrd")
            )
            identical += same
            print(f"{n + 1}/{len(inputs)} {name}: {'identical' if same else 'DIFFERENT'}", flush=True)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}; {len(inputs)} cases, model {args.model}, "
        f"fragility {'on' if args.fragility else 'off'}\n"
    )
    print("| triage | cases | failed | total (s) | s per case | cases per minute |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        per_case = seconds[mode] / len(inputs)
        failed = outcomes[mode].count("failed")
        print(f"| {mode} | {len(inputs)} | {failed} | {seconds[mode]:.1f} | {per_case:.2f} | {60 / per_case:.1f} |")
    print(f"\nnow / before, time per case: {seconds[MODES[1]] / seconds[MODES[0]]:.2f}")
    print(f"outputs identical to the bit (segmentation, risk map): {identical} of {len(inputs)} cases")


if __name__ == "__main__":
    main()
