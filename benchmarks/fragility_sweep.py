"""How the fragility search's step size, penalty and trainable part trade off, on the head-calibration split.

Each setting runs the search through ``evaluate_methods`` (the engine behind ``seguncertainty
evaluate``) on the first ``--limit`` cases of the calibration split (never the test split: this
chooses defaults). Printed per setting: seconds per case, pooled roi error-detection AUROC of flip
mass, of the epistemic and of the total map, the epistemic map's per-case PCC with the raters'
variability in the roi, and GED², HM-IoU and volume CRPS of the samples (the reference and each
adversary's last admissible snapshot).

Usage::

    python benchmarks/fragility_sweep.py [--limit 20] [--settings last-conv:1e-4,last-conv:3e-4:10,head:1e-2]

A setting is ``trainable:learning_rate[:penalty_start]``.
"""

from __future__ import annotations

import argparse
import time

from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.evaluation.report import method_table, score_table, variability_table
from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.model.package import load_package

SETTINGS = (
    "last-conv:1e-4,last-conv:3e-4,last-conv:1e-3,head:1e-3,head:1e-2,last-block:1e-4,last-block:3e-4,"
    "last-conv:3e-4:10,last-conv:1e-3:10,last-conv:1e-3:100"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.set_defaults(split="calibration", limit=20)
    parser.add_argument("--settings", default=SETTINGS)
    args = parser.parse_args()
    package = load_package(args.model)
    cases = load_dataset_cases("lidc", args.split, args.cache_dir, args.limit)
    print(f"{len(cases)} {args.split} cases\n")
    columns = "flip mass AUROC | epistemic AUROC | total AUROC | epistemic PCC roi | GED² | HM-IoU | volume CRPS (mL)"
    print(f"| trainable | lr | c0 | s/case | {columns} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for setting in args.settings.split(","):
        trainable, rate, *rest = setting.split(":")
        penalty = float(rest[0]) if rest else 1.0
        config = FragilityConfig(trainable=trainable, learning_rate=float(rate), penalty_start=penalty)
        start = time.perf_counter()
        evaluation = evaluate_methods(cases, package, ["fragility"], args.device, fragility=config)
        seconds = (time.perf_counter() - start) / len(cases)
        auroc = {row["score"]: row["auroc_roi_pooled"] for row in score_table(evaluation)}
        pcc = {row["role"]: row["pcc_roi"] for row in variability_table(evaluation)}
        m = method_table(evaluation)[0]
        print(
            f"| {trainable} | {rate} | {penalty:g} | {seconds:.2f} | {auroc['flip_mass']:.3f} | "
            f"{auroc['fragility_epistemic']:.3f} | {auroc['fragility_total']:.3f} | {pcc['epistemic']:.3f} | "
            f"{m['ged']:.4f} | {m['hm_iou']:.4f} | {m['volume_crps_ml']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
