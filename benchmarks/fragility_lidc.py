"""The fragility search on the LIDC test split in one run: fast and faithful modes, replay labels, the baselines, cost.

On the same cases, ``evaluate_methods`` (the engine behind ``seguncertainty evaluate``) runs

* the ensemble and test-time augmentation (the baselines the issue names) and the fast search with
  its defaults, on the bundled package;
* the faithful search (``QuamConfig()``, the published settings), on the bundled package;
* the fast search on ``--self-replay-model`` (the bundled package with a replay set labelled by the
  model's own predictions: ``seguncertainty prepare-replay --images``), if given.

Printed per row: seconds per case; pooled roi error-detection AUROC of flip mass and of the
epistemic and total maps (error = differs from the raters' majority); QUAM-SM's protocol (per-case
PCC of the epistemic and total map with the raters' variability in the roi); GED² and HM-IoU of
the samples. Then the cost on the demo volume, in process, with a warm Predictor for each mode
(its networks and replay pass made once, as in ``triage`` and the Slicer module): the median of
``--repeats`` of (plain inference + search) over the plain inference.

Usage::

    python benchmarks/fragility_lidc.py [--limit N] [--self-replay-model DIR] [--modes fast,quam] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from common import add_model_and_data_options  # first: puts the repository on the import path

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.evaluation.harness import evaluate_methods
from SegUncertaintyLib.evaluation.report import method_table, score_table, variability_table
from SegUncertaintyLib.fragility.config import FragilityConfig, QuamConfig
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.resources import sample_path

MODES = {"fast": FragilityConfig(), "quam": QuamConfig()}
# per method: the maps that play epistemic / total, and the one that ranks errors as "flip mass"
MAPS = {
    "fragility": ("fragility_epistemic", "fragility_total", "flip_mass"),
    "ensemble": ("mutual_information", "entropy", None),
    "tta": ("mutual_information", "entropy", None),
}


def rows_of(evaluation, label: str, methods: list[str]) -> list[str]:
    """Markdown rows of the table for ``methods`` of one evaluation."""
    auroc = {(r["method"], r["score"]): r["auroc_roi_pooled"] for r in score_table(evaluation)}
    pcc = {(r["method"], r["role"]): r["pcc_roi"] for r in variability_table(evaluation)}
    table = {r["method"]: r for r in method_table(evaluation)}
    out = []
    for method in methods:
        epistemic, total, flips = MAPS[method]
        m = table[method]
        flip = f"{auroc[(method, flips)]:.3f}" if flips else "–"
        out.append(
            f"| {label if method == 'fragility' else method} | {m['seconds_per_case']:.2f} | {flip} | "
            f"{auroc[(method, epistemic)]:.3f} | {auroc[(method, total)]:.3f} | {pcc[(method, 'epistemic')]:.3f} | "
            f"{pcc[(method, 'total')]:.3f} | {m['ged']:.4f} | {m['hm_iou']:.4f} |"
        )
    return out


def demo_cost(model: str, device: str, config, repeats: int) -> tuple[float, float, float]:
    """Median plain inference (s), median search (s) and their (plain + search) / plain, on the demo volume."""
    predictor = Predictor(model, device, fragility=config)
    volume = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    predictor.search(volume, predictor.predict(volume, "none"))  # warm: networks, replay pass, first calls
    plain, search = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        reference = predictor.predict(volume, "none")
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        predictor.search(volume, reference)
        search.append(time.perf_counter() - start)
    p, s = statistics.median(plain), statistics.median(search)
    return p, s, (p + s) / p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(parser)
    parser.add_argument("--self-replay-model", default=None, help="the package with a self-labelled replay set")
    parser.add_argument("--modes", default="fast,quam", help="which modes of the search (comma-separated)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the demo cost measurement")
    args = parser.parse_args()
    modes = args.modes.split(",")
    package = load_package(args.model)
    cases = load_dataset_cases("lidc", args.split, args.cache_dir, args.limit)
    print(
        f"{len(cases)} LIDC {args.split} cases; {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}\n",
        flush=True,
    )
    header = (
        "| method | s/case | flip mass AUROC | epistemic AUROC | total AUROC | epistemic PCC roi | total PCC roi | "
        "GED² | HM-IoU |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        methods = ["ensemble", "tta", "fragility"] if mode == "fast" else ["fragility"]
        evaluation = evaluate_methods(cases, package, methods, args.device, fragility=MODES[mode])
        rows += rows_of(evaluation, f"fragility, {mode} mode", methods)
        print("\n".join(rows[-len(methods) :]), flush=True)
    if args.self_replay_model:
        evaluation = evaluate_methods(cases, load_package(args.self_replay_model), ["fragility"], args.device)
        rows += rows_of(evaluation, "fragility, fast mode, self-labelled replay", ["fragility"])
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))

    print("\n| mode | plain inference (s) | search (s) | (plain + search) / plain |\n|---|---|---|---|")
    for mode in modes:
        plain, search, ratio = demo_cost(args.model, args.device, MODES[mode], args.repeats)
        print(f"| {mode} | {plain:.2f} | {search:.2f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
