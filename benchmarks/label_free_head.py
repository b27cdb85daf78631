"""Heads trained without labels against the labelled head, TTA and the ensemble, on an LIDC split.

    seguncertainty prepare-data lidc
    seguncertainty export-cases --split calibration --output-dir /tmp/lidc-calibration   # images only are used
    cp -r Resources/models/lidc-nodule /tmp/lidc-label-free
    seguncertainty train-head --model /tmp/lidc-label-free --images /tmp/lidc-calibration --max-epochs 40
    python benchmarks/label_free_head.py --label-free /tmp/lidc-label-free [--limit N]

The label-free head saw the head-calibration split's images and nothing else: its targets are the
backbone's disagreement with itself on corrupted copies. The labelled head (bundled) trained on
the same images with the raters' majority. Both, and the baselines, run through ``evaluate``'s
engine (:func:`~SegUncertaintyLib.evaluation.harness.evaluate_methods`) on the same test cases in
one process: roi AUROC and AURC of each map for finding the voxels that differ from the raters'
majority (pooled roi voxels), ECE of the (tempered, for a head) probabilities over the roi.

Several label-free packages (trained with different ``--corruptions`` or ``--foreground-fraction``)
can be compared at once; each row names both.
``--split calibration --heads-only`` scores them on the calibration split's labels, which the
label-free heads never read, to choose among them without looking at the test split.
"""

import argparse
import time

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.evaluation.report import method_table, score_table
from SegUncertaintyLib.model.package import ModelPackage, load_package

BASELINES = [  # (label, method, score) of the bundled package
    ("max-softmax", "msp", "max_softmax"),
    ("TTA (8 flips): mutual information", "tta", "mutual_information"),
    ("TTA (8 flips): entropy", "tta", "entropy"),
    ("ensemble (3 backbones): mutual information", "ensemble", "mutual_information"),
    ("ensemble (3 backbones): entropy", "ensemble", "entropy"),
]


def settings_of(package: ModelPackage) -> str:
    """The settings the package's head was trained with that tell label-free heads apart: its
    corruptions, as ``--corruptions`` takes them, and the share of patches on the foreground."""
    config = package.card.head.training["config"]
    corruptions = ",".join(
        f"{k}={('yes' if v else 'no') if k == 'flip' else v}" for k, v in config["corruptions"].items()
    )
    return f"{corruptions}; foreground fraction {config['foreground_fraction']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label-free", required=True, nargs="+", help="packages with a label-free head")
    parser.add_argument("--split", default="test", choices=("test", "calibration"))
    parser.add_argument("--heads-only", action="store_true", help="leave out TTA, the ensemble and max-softmax")
    parser.add_argument("--limit", type=int, help="only the first N cases")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cases = load_dataset_cases("lidc", args.split, None, args.limit)
    started = time.perf_counter()
    methods = ["segwithu"] if args.heads_only else ["segwithu", "msp", "tta", "ensemble"]
    rows = [
        (
            "SegWithU head, labelled (bundled)",
            evaluate_methods(cases, load_package("lidc-nodule"), methods, args.device),
            "segwithu",
            "ranking",
        )
    ]
    for path in args.label_free:
        package = load_package(path)
        label = f"SegWithU head, label-free ({settings_of(package)})"
        rows.append((label, evaluate_methods(cases, package, ["segwithu"], args.device), "segwithu", "ranking"))
    if not args.heads_only:
        rows += [(label, rows[0][1], method, score) for label, method, score in BASELINES]
    print(f"{len(cases)} {args.split} cases, {time.perf_counter() - started:.0f} s\n")
    print("| method: map | forward passes | AUROC roi (pooled) | AURC×1000 roi (pooled) | ECE roi | NLL roi | s/case |")
    print("|---|---|---|---|---|---|---|")
    for label, evaluation, method, score in rows:
        m = {row["method"]: row for row in method_table(evaluation)}[method]
        s = {(row["method"], row["score"]): row for row in score_table(evaluation)}[(method, score)]
        print(
            f"| {label} | {m['forward_passes']} | {s['auroc_roi_pooled']:.4f} | {s['aurc_roi_pooled_x1000']:.3f} "
            f"| {m['ece']:.4f} | {m['nll']:.4f} | {m['seconds_per_case']:.2f} |"
        )


if __name__ == "__main__":
    main()
