"""A head trained without labels against the labelled head, TTA and the ensemble, on the LIDC test split.

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
"""

import argparse
import time

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.evaluation.report import method_table, score_table
from SegUncertaintyLib.model.package import load_package

ROWS = [  # (label, which evaluation, method, score)
    ("SegWithU head, labelled (bundled)", "labelled", "segwithu", "ranking"),
    ("SegWithU head, label-free", "label-free", "segwithu", "ranking"),
    ("max-softmax", "labelled", "msp", "max_softmax"),
    ("TTA (8 flips): mutual information", "labelled", "tta", "mutual_information"),
    ("TTA (8 flips): entropy", "labelled", "tta", "entropy"),
    ("ensemble (3 backbones): mutual information", "labelled", "ensemble", "mutual_information"),
    ("ensemble (3 backbones): entropy", "labelled", "ensemble", "entropy"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label-free", required=True, help="the package with the label-free head")
    parser.add_argument("--limit", type=int, help="only the first N test cases")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cases = load_dataset_cases("lidc", "test", None, args.limit)
    started = time.perf_counter()
    evaluations = {
        "labelled": evaluate_methods(
            cases, load_package("lidc-nodule"), ["segwithu", "msp", "tta", "ensemble"], args.device
        ),
        "label-free": evaluate_methods(cases, load_package(args.label_free), ["segwithu"], args.device),
    }
    print(f"{len(cases)} test cases, {time.perf_counter() - started:.0f} s\n")
    print("| method: map | forward passes | AUROC roi (pooled) | AURC×1000 roi (pooled) | ECE roi | NLL roi | s/case |")
    print("|---|---|---|---|---|---|---|")
    for label, which, method, score in ROWS:
        evaluation = evaluations[which]
        methods = {row["method"]: row for row in method_table(evaluation)}
        scores = {(row["method"], row["score"]): row for row in score_table(evaluation)}
        m, s = methods[method], scores[(method, score)]
        print(
            f"| {label} | {m['forward_passes']} | {s['auroc_roi_pooled']:.4f} | {s['aurc_roi_pooled_x1000']:.3f} "
            f"| {m['ece']:.4f} | {m['nll']:.4f} | {m['seconds_per_case']:.2f} |"
        )


if __name__ == "__main__":
    main()
