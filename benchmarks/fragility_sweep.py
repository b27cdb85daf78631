"""How the fragility search's step size, penalty and trainable part trade off, on the head-calibration split.

Each setting runs the search through ``evaluate_methods`` (the engine behind ``seguncertainty
evaluate``) on the first ``--limit`` cases of the calibration split (never the test split: this
chooses defaults). Printed per setting: seconds per case, pooled roi error-detection AUROC of flip
mass, of the epistemic and of the total map, the epistemic and total maps' per-case PCC with the
raters' variability in the roi, and GED², HM-IoU and volume CRPS of the samples (the reference and each
adversary's last admissible snapshot).

Usage::

    python benchmarks/fragility_sweep.py [--limit 20] [--settings "trainable=head/learning_rate=1e-2 slack=0.1"]

Settings are separated by spaces; each is ``/``-separated ``field=value`` pairs of
:class:`FragilityConfig` (``radii_mm`` comma-separated), the defaults for the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.evaluation.report import method_table, score_table, variability_table
from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.model.package import load_package

SETTINGS = (
    "learning_rate=1e-4 learning_rate=3e-4 learning_rate=1e-3 trainable=head/learning_rate=1e-3 "
    "trainable=head/learning_rate=1e-2 trainable=last-block/learning_rate=1e-4 trainable=last-block/learning_rate=3e-4"
)
FIELDS = {f.name: f.type for f in dataclasses.fields(FragilityConfig)}


def parse_setting(text: str) -> FragilityConfig:
    """``"learning_rate=1e-4/radii_mm=2,3"`` -> the config with those fields changed."""
    changes = {}
    for pair in text.split("/"):
        name, _, value = pair.partition("=")
        if name not in FIELDS:
            raise SystemExit(f"unknown setting {name!r}; use one of {', '.join(FIELDS)}")
        if name == "radii_mm":
            changes[name] = tuple(float(v) for v in value.split(","))
        elif name == "trainable":
            changes[name] = value
        else:
            changes[name] = (
                int(value) if name in ("steps", "penalty_every", "roi_margin_voxels", "replay_crop") else float(value)
            )
    return FragilityConfig(**changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.set_defaults(split="calibration", limit=20)
    parser.add_argument("--settings", default=SETTINGS)
    args = parser.parse_args()
    package = load_package(args.model)
    cases = load_dataset_cases("lidc", args.split, args.cache_dir, args.limit)
    print(f"{len(cases)} {args.split} cases\n")
    columns = (
        "flip mass AUROC | epistemic AUROC | total AUROC | epistemic PCC roi | total PCC roi | GED² | HM-IoU | "
        "volume CRPS (mL)"
    )
    print(f"| setting | s/case | {columns} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for setting in args.settings.split():
        config = parse_setting(setting)
        start = time.perf_counter()
        evaluation = evaluate_methods(cases, package, ["fragility"], args.device, fragility=config)
        seconds = (time.perf_counter() - start) / len(cases)
        auroc = {row["score"]: row["auroc_roi_pooled"] for row in score_table(evaluation)}
        pcc = {row["role"]: row["pcc_roi"] for row in variability_table(evaluation)}
        m = method_table(evaluation)[0]
        print(
            f"| {setting} | {seconds:.2f} | {auroc['flip_mass']:.3f} | "
            f"{auroc['fragility_epistemic']:.3f} | {auroc['fragility_total']:.3f} | "
            f"{pcc['epistemic']:.3f} | {pcc['total']:.3f} | "
            f"{m['ged']:.4f} | {m['hm_iou']:.4f} | {m['volume_crps_ml']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
