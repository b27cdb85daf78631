"""Held-out Dice by sliding-window overlap, on volumes where the windows fall at other offsets.

The LIDC test cases are 48^3 crops, one window each, so on them the overlap changes nothing. Here
every case is also mirror-tiled 2 x 2 x 2 (96^3, its rater masks tiled the same way): windows then
straddle the nodule at the offsets a large scan gives, and the overlap matters. For each overlap
this prints the mean Dice against the raters' majority vote (>= 2 of 4), on the cases as they are
and tiled, the largest change of any case against the first overlap listed, and the time per tiled
case, all in this one process.

Usage::

    python benchmarks/window_overlap.py [--overlaps 0.5,0.25,0.125] [--model lidc-nodule] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import numpy as np
import torch
from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.lidc_dataset import load_cases
from SegUncertaintyLib.metrics import dice_per_class
from SegUncertaintyLib.model.package import ModelPackage, load_package
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.volume import Geometry, Volume


def mirror_tiled(array: np.ndarray) -> np.ndarray:
    """``(k, j, i)`` -> ``(2k, 2j, 2i)``: the array and its mirror image along each axis."""
    for axis in range(3):
        array = np.concatenate([array, np.flip(array, axis)], axis=axis)
    return np.ascontiguousarray(array)


def with_overlap(package: ModelPackage, overlap: float) -> ModelPackage:
    return replace(package, card=replace(package.card, inference=replace(package.card.inference, overlap=overlap)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.add_argument("--overlaps", default="0.5,0.25,0.125")
    args = parser.parse_args()
    overlaps = [float(o) for o in args.overlaps.split(",")]
    package = load_package(args.model)
    cases = load_cases(args.split, args.cache_dir, args.limit)
    classes = package.card.num_classes
    predictors = {overlap: Predictor(with_overlap(package, overlap), args.device) for overlap in overlaps}
    dice = {o: {"case": [], "tiled": []} for o in overlaps}
    seconds = {o: 0.0 for o in overlaps}
    for case in cases:
        grid = case.volume.geometry
        tiled = Volume(
            mirror_tiled(case.volume.array),
            Geometry(tuple(2 * n for n in grid.shape), grid.spacing, grid.origin, grid.direction),
        )
        reference = mirror_tiled(np.asarray(case.majority, np.uint8))
        for overlap, predictor in predictors.items():  # alternating, so every overlap sees the same machine state
            labels = predictor.predict(case.volume, "none").labels
            dice[overlap]["case"].append(float(np.mean(dice_per_class(labels, case.majority, classes))))
            start = time.perf_counter()
            labels = predictor.predict(tiled, "none").labels
            seconds[overlap] += time.perf_counter() - start
            dice[overlap]["tiled"].append(float(np.mean(dice_per_class(labels, reference, classes))))
    print(
        f"\n{package.card.name}, {len(cases)} {args.split} cases; machine: {platform.machine()}, {os.cpu_count()} "
        f"cores, torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}\n"
    )
    print(
        "| overlap | windows per voxel | Dice, cases (48^3) | Dice, tiled (96^3) | largest change of a tiled case "
        "| s per tiled case | time ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    base = np.array(dice[overlaps[0]]["tiled"])
    for overlap in overlaps:
        tiled_dice = np.array(dice[overlap]["tiled"])
        print(
            f"| {overlap} | {1 / (1 - overlap) ** 3:.2f} | {np.mean(dice[overlap]['case']):.4f} "
            f"| {tiled_dice.mean():.4f} "
            f"| {np.abs(tiled_dice - base).max():.4f} | {seconds[overlap] / len(cases):.2f} "
            f"| {seconds[overlap] / seconds[overlaps[0]]:.2f} |"
        )


if __name__ == "__main__":
    main()
