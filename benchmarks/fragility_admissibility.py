"""Is the fragility search two-sided? Each adversary's replay loss per step, grow against shrink.

For every case the default search runs once (a Predictor, the bundled model); its summary gives
the replay loss of every adversary after every step. Per direction and radius this prints:

* the median relative change of the replay loss after the first step and after the last, against
  the reference's (``L / L_ref - 1``), beside the admissibility slack;
* the share of adversaries with at least one admissible snapshot (the issue's goal: >= 80 % for
  shrink);
* over the cases, the median share of the mixture's weight held by its heaviest snapshot other
  than the reference (the search's own :func:`snapshot_weights` over admissible snapshots, the
  reference at 1; the goal: no snapshot above one half), and the reference's own share.

Usage::

    python benchmarks/fragility_admissibility.py [--limit 20] [--split test] [--cache-dir DIR]
                                                 [--learning-rate LR] [--slack S] [--steps K] [--radii 2]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import numpy as np
from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.fragility.search import snapshot_weights
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.progress import TextProgress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.add_argument("--learning-rate", type=float, default=None, help="the search's step size (default: its own)")
    parser.add_argument("--slack", type=float, default=None, help="the admissibility slack (default: its own)")
    parser.add_argument("--steps", type=int, default=None, help="steps per adversary (default: its own)")
    parser.add_argument("--radii", default=None, help="grow/shrink distances in mm, comma-separated (default: its own)")
    args = parser.parse_args()
    radii = tuple(float(r) for r in args.radii.split(",")) if args.radii else None
    options = (("learning_rate", args.learning_rate), ("slack", args.slack), ("steps", args.steps), ("radii_mm", radii))
    changes = {k: v for k, v in options if v is not None}
    predictor = Predictor(args.model, args.device, fragility=FragilityConfig(**changes))
    config = predictor.fragility
    cases = load_dataset_cases("lidc", args.split, args.cache_dir, args.limit or 20)
    first, last, admissible = defaultdict(list), defaultdict(list), defaultdict(list)
    heaviest, reference_share, flip_median, saturation = [], [], [], []
    progress = TextProgress()
    for n, case in enumerate(cases):
        volume = case.volume
        result = predictor.search(volume, predictor.predict(volume, "none"))
        summary = result.summary
        flips = result.maps["flip_mass"][result.maps["fragile"] > 0]
        if flips.size:
            flip_median.append(float(np.median(flips)))
            saturation.extend((flips >= 0.99).tolist())
        if not summary["adversaries"]:
            continue
        reference = summary["replay_loss_reference"]
        losses = np.asarray(summary["replay_loss_per_step"])  # (steps, adversaries)
        for a, name in enumerate(summary["adversaries"]):
            kind = " ".join(name.split()[:1] + name.split()[2:])  # "grow 1 mm": the class left out
            first[kind].append(losses[0, a] / reference - 1.0)
            last[kind].append(losses[-1, a] / reference - 1.0)
            admissible[kind].append(summary["admissible_per_adversary"][a] > 0)
        temperature = config.temperature or config.slack
        allowed = losses <= summary["replay_loss_bound"]
        weights = snapshot_weights(losses[allowed], reference, temperature)
        heaviest.append(float(weights.max() / (1.0 + weights.sum())) if weights.size else 0.0)
        reference_share.append(float(1.0 / (1.0 + weights.sum())))
        progress("search", (n + 1) / len(cases), case.case_id)

    print(
        f"\n{predictor.package.card.name}, {len(cases)} LIDC {args.split} cases, the default search "
        f"({config.steps} steps, trainable {predictor.searcher.spec.part}, "
        f"learning rate {config.step_size(predictor.searcher.spec.uniform):g}); "
        f"admissible: replay loss <= the reference's + {config.slack:g} nats\n"
    )
    print("| adversary | cases | replay loss after step 1 | after the last step | with an admissible snapshot |")
    print("|---|---|---|---|---|")
    for kind in sorted(first, key=lambda k: (k.split()[0], float(k.split()[1]))):
        print(
            f"| {kind} | {len(first[kind])} | {statistics.median(first[kind]):+.2%} | "
            f"{statistics.median(last[kind]):+.2%} | {np.mean(admissible[kind]):.0%} |"
        )
    saturated = np.mean(saturation) if saturation else float("nan")
    print(
        f"\nflip mass on the fragile voxels: median over the cases of its median {statistics.median(flip_median):.3f}; "
        f"fragile voxels at >= 0.99 (saturated): {saturated:.1%}"
    )
    print(
        f"\nheaviest snapshot's share of the mixture (reference at 1): median {statistics.median(heaviest):.4f}, "
        f"above one half in {np.mean(np.asarray(heaviest) > 0.5):.0%} of the cases; the reference's own share: "
        f"median {statistics.median(reference_share):.2e}"
    )


if __name__ == "__main__":
    main()
