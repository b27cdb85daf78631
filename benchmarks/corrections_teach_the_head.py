"""How many corrected cases it takes to raise the head's AUROC: simulated reviews on LIDC.

    seguncertainty prepare-data lidc
    (the label-free head of benchmarks/label_free_head.py in /tmp/lidc-label-free)
    python benchmarks/corrections_teach_the_head.py --start /tmp/lidc-label-free --work /tmp/reviews

Reviews are simulated through the product's own path. Head-calibration cases, in an order drawn by
patient with ``--seed``, are written as volume files and run through ``predict`` (the starting
package, its head's regions); a review session is started on each result that has a region, and
its first region is "corrected" with the raters' majority (the whole label map, as a reviewer
who fixed every error would leave it; the other regions stay pending). For each count of corrected
cases, a copy of the starting package goes on training its head with ``train-head
--from-reviews`` on the sessions of the first cases, and the new head is scored on held-out test
cases (roi AUROC and AURC of the ranking map, pooled, against the raters' majority; the engine of
``evaluate``). Count 0 is the starting head itself. A trained head that ranks the errors of the
corrections held out for its validation worse than the starting head is not kept (``train-head
--from-reviews`` leaves the package as it was): the row then scores the starting head and says so.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.evaluation.report import score_table
from SegUncertaintyLib.io import write_volume
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.review.session import ReviewSession
from SegUncertaintyLib.segwithu.scan_training import train_head_on_scans
from SegUncertaintyLib.segwithu.scans import reviewed_scan
from SegUncertaintyLib.segwithu.training import HeadTrainingConfig


def simulate_reviews(start: Path, work: Path, count: int, seed: int) -> list[Path]:
    """Review sessions of up to ``count`` calibration cases, the first region corrected with the majority."""
    cases = load_dataset_cases("lidc", "calibration")
    patients = sorted({c.patient_id for c in cases})
    order = {p: n for n, p in enumerate(np.random.default_rng(seed).permutation(patients))}
    cases.sort(key=lambda c: (order[c.patient_id], c.case_id))
    predictor = Predictor(load_package(start), "cpu")
    sessions = []
    for case in cases:
        if len(sessions) == count:
            break
        run = work / case.case_id
        if (run / "review" / "review.json").is_file():
            sessions.append(run / "review")
            continue
        run.mkdir(parents=True, exist_ok=True)
        image = write_volume(case.image, case.geometry, run / "input.nrrd")
        result = predict_to_files(image, run / "outputs", predictor)
        regions = result.regions()
        if not regions:
            continue
        session = ReviewSession.start(run / "review", result.path(result.summary.outputs.segmentation), regions)
        session.correct(regions[0].label, np.asarray(case.majority, np.uint8), reviewer="simulated")
        sessions.append(run / "review")
    return sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=Path, required=True, help="package whose head the corrections teach")
    parser.add_argument("--work", type=Path, required=True, help="folder for the simulated review sessions")
    parser.add_argument("--counts", default="0,5,10,20,40,80", help="numbers of corrected cases")
    parser.add_argument("--held-out", type=int, default=60, help="test cases the heads are scored on")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    counts = [int(c) for c in args.counts.split(",")]
    started = time.perf_counter()
    sessions = simulate_reviews(args.start, args.work, max(counts), args.seed)
    print(f"{len(sessions)} review sessions in {time.perf_counter() - started:.0f} s")
    held_out = load_dataset_cases("lidc", "test", None, args.held_out)
    config = HeadTrainingConfig(max_epochs=args.max_epochs, seed=args.seed)
    rows = []
    for count in counts:
        package, seconds, kept = args.start, 0.0, False
        if count:
            package = args.work / f"package-{count}"
            shutil.rmtree(package, ignore_errors=True)
            shutil.copytree(args.start, package)
            scans = [reviewed_scan(folder) for folder in sessions[:count]]
            t0 = time.perf_counter()
            result = train_head_on_scans(package, scans, config, "cpu", f"corrections_teach_the_head.py, {count} cases")
            seconds = time.perf_counter() - t0
            kept = result["kept_previous"]
        evaluation = evaluate_methods(held_out, load_package(package), ["segwithu", "msp"], "cpu")
        scores = {(r["method"], r["score"]): r for r in score_table(evaluation)}
        row = {
            "corrected_cases": count,
            "kept_previous": kept if count else None,
            "auroc_roi": scores[("segwithu", "ranking")]["auroc_roi_pooled"],
            "aurc_roi_x1000": scores[("segwithu", "ranking")]["aurc_roi_pooled_x1000"],
            "msp_auroc_roi": scores[("msp", "max_softmax")]["auroc_roi_pooled"],
            "training_seconds": round(seconds, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{len(held_out)} held-out test cases; {args.max_epochs} epochs at most per count\n")
    print("| corrected cases | new head kept | roi AUROC | roi AURC×1000 | max-softmax roi AUROC | training (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        kept = {None: "(start)", True: "no: worse on the held-out corrections", False: "yes"}[r["kept_previous"]]
        print(
            f"| {r['corrected_cases']} | {kept} | {r['auroc_roi']:.4f} | {r['aurc_roi_x1000']:.3f} "
            f"| {r['msp_auroc_roi']:.4f} | {r['training_seconds']} |"
        )


if __name__ == "__main__":
    main()
