"""Held-out Dice of a model package on an LIDC split, next to the raters' own agreement.

For every case: Dice of the model's label map vs the raters' majority vote (>= 2 of 4), the mean
Dice vs each rater, and, for scale, the mean pairwise Dice between the four radiologists on the
same case. Uses the same inference engine as ``seguncertainty predict``.

Usage::

    python benchmarks/backbone_dice.py [--model lidc-nodule] [--split test] [--cache-dir DIR] [--limit N]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.lidc_dataset import load_cases
from SegUncertaintyLib.metrics import dice
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.progress import TextProgress
from SegUncertaintyLib.training import evaluate_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    args = parser.parse_args()

    package = load_package(args.model)
    cases = load_cases(args.split, args.cache_dir, args.limit)
    result = evaluate_backbone(package, load_backbone(package, args.device), cases, args.device, TextProgress())
    raters = [np.mean([dice(c.raters[a], c.raters[b]) for a in range(4) for b in range(a + 1, 4)]) for c in cases]
    majority = np.array([r["dice_majority"] for r in result["per_case"]])
    per_rater = np.array([np.mean(r["dice_raters"]) for r in result["per_case"]])
    print(f"\n{package.card.name} on {len(cases)} {args.split} cases (LIDC, 4 raters each)\n")
    print("| comparison | mean Dice | median Dice | p10 |")
    print("|---|---|---|---|")
    for name, values in [
        ("model vs majority vote (>= 2 of 4)", majority),
        ("model vs each rater", per_rater),
        ("rater vs rater (pairwise)", np.array(raters)),
    ]:
        print(f"| {name} | {values.mean():.3f} | {np.median(values):.3f} | {np.percentile(values, 10):.3f} |")


if __name__ == "__main__":
    main()
