"""Uncertainty quality of the SegWithU head vs max-softmax and entropy on the LIDC test split.

For every test nodule, one prediction with the head gives the raw probabilities (max-softmax and
entropy come from them), the calibrated probabilities and the ranking map. The reference is the
raters' majority vote (>= 2 of 4); a voxel is an error where the segmentation differs from it.
Two voxel sets:

* ``all``: every voxel of each case (crops of at least 48 mm around the nodule, 1 mm voxels);
* ``roi``: voxels within 3 mm of the prediction or of any rater's outline (holds every error, and
  the hard correct voxels along the boundaries).

Error detection: AUROC (Mann-Whitney) and AURC / E-AURC of the risk-coverage curve, pooled over
all voxels of all cases (AURC printed x1000), plus the per-case mean AUROC. Calibration: top-label
ECE with 15 equal-width bins of raw vs calibrated probabilities, pooled.

Usage::

    python benchmarks/head_quality.py [--model lidc-nodule] [--split test] [--cache-dir DIR] [--limit N]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.lidc_dataset import iter_cases
from SegUncertaintyLib.metrics import aurc, auroc, e_aurc, expected_calibration_error, region_around
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.progress import TextProgress
from SegUncertaintyLib.uncertainty import max_softmax_uncertainty, predictive_entropy

METHODS = ("segwithu ranking", "max-softmax", "entropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.add_argument("--margin-mm", type=float, default=3.0)
    args = parser.parse_args()

    predictor = Predictor(args.model, args.device)
    package = predictor.package
    pooled = {region: {k: [] for k in (*METHODS, "errors", "conf_raw", "conf_cal")} for region in ("all", "roi")}
    per_case = {region: {m: [] for m in METHODS} for region in ("all", "roi")}
    cases = list(iter_cases(args.split, args.cache_dir, args.limit))
    progress = TextProgress()
    for n, case in enumerate(cases):
        prediction = predictor.predict(case.volume, "segwithu")
        reference = np.asarray(case.majority, np.uint8)
        errors = prediction.labels != reference
        scores = {
            "segwithu ranking": prediction.maps["ranking"],
            "max-softmax": max_softmax_uncertainty(prediction.probabilities),
            "entropy": predictive_entropy(prediction.probabilities),
        }
        regions = {
            "all": np.ones_like(errors),
            "roi": region_around(
                np.concatenate([prediction.labels[None] > 0, case.raters]), args.margin_mm, case.geometry.spacing
            ),
        }
        for region, mask in regions.items():
            for method, score in scores.items():
                pooled[region][method].append(score[mask])
                per_case[region][method].append(auroc(score[mask], errors[mask]))
            pooled[region]["errors"].append(errors[mask])
            pooled[region]["conf_raw"].append(prediction.probabilities.max(axis=0)[mask])
            pooled[region]["conf_cal"].append(prediction.calibrated_probabilities.max(axis=0)[mask])
        progress("evaluate", (n + 1) / len(cases), case.case_id)

    print(
        f"\n{package.card.name} + SegWithU head on {len(cases)} LIDC {args.split} cases; "
        f"reference = majority vote of 4 raters; roi = within {args.margin_mm:g} mm of prediction or raters\n"
    )
    print(
        "| voxel set | voxels | error rate | method | AUROC (pooled) | AUROC (per-case mean) "
        "| AURC x1000 | E-AURC x1000 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for region, data in pooled.items():
        errors = np.concatenate(data["errors"])
        for method in METHODS:
            score = np.concatenate(data[method])
            print(
                f"| {region} | {errors.size} | {errors.mean():.5f} | {method} | {auroc(score, errors):.4f} | "
                f"{np.nanmean(per_case[region][method]):.4f} | {1000 * aurc(score, errors):.4f} | "
                f"{1000 * e_aurc(score, errors):.4f} |"
            )
    print("\n| voxel set | ECE raw | ECE calibrated | ratio |")
    print("|---|---|---|---|")
    for region, data in pooled.items():
        correct = ~np.concatenate(data["errors"])
        raw = expected_calibration_error(np.concatenate(data["conf_raw"]), correct)
        calibrated = expected_calibration_error(np.concatenate(data["conf_cal"]), correct)
        print(f"| {region} | {raw:.5f} | {calibrated:.5f} | {calibrated / raw:.2f} |")


if __name__ == "__main__":
    main()
