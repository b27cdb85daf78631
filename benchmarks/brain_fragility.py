"""Fragility for deepbet, a model without a labelled replay set: self-labelled replay, leave one subject out.

    apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron
    seguncertainty prepare-data brains --mricron mricron/usr/share/mricron/templates    # Colin27
    python benchmarks/brain_fragility.py [--patches 2]

For each of the three labelled heads (MNI152 1 mm, the ITK T1 head, Colin27), a copy of the
bundled deepbet package gets a replay set made from the **other two heads' images alone**, labelled
by deepbet's own predictions (``build_self_replay``, what ``prepare-replay --images`` runs); no
reference mask is used. The fast search with its defaults (deepbet is TorchScript, so ``auto``
perturbs its output logits) then runs on the held-out head. Scored as ``brain_uncertainty.py``
scores its maps: how well each finds deepbet's own wrong voxels (AUROC, AURC) within 3 mm of
either outline, beside the entropy of the same prediction. Time per head: the plain prediction and
the search (its replay pass included, once per package).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from brain_uncertainty import scores

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.fragility.replay import REPLAY_FILE
from SegUncertaintyLib.fragility.self_replay import build_self_replay
from SegUncertaintyLib.io import write_volume
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.uncertainty import predictive_entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="where prepare-data brains put Colin27")
    parser.add_argument("--patches", type=int, default=2, help="replay patches (one per training head)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    bundled = load_package("deepbet")
    cases = load_dataset_cases("brains", "test", args.cache_dir)
    rows = ["| head | method: map | Dice | roi AUROC | roi AURC |", "|---|---|---|---|---|"]
    times = ["| head | plain prediction (s) | replay set (s) | search (s) | fragile voxels |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = {}
        for case in cases:
            images[case.case_id] = write_volume(case.image, case.geometry, folder / f"{case.case_id}.nrrd")
        for held_out in cases:
            package_dir = folder / f"deepbet-without-{held_out.case_id}"
            shutil.rmtree(package_dir, ignore_errors=True)
            shutil.copytree(bundled.path, package_dir, ignore=shutil.ignore_patterns(REPLAY_FILE))
            predictor = Predictor(load_package(package_dir), args.device)
            start = time.perf_counter()
            others = [images[c.case_id] for c in cases if c is not held_out]
            build_self_replay(predictor, others, patches=args.patches)
            replay_seconds = time.perf_counter() - start
            predictor = Predictor(load_package(package_dir), args.device)  # the package with its new replay set
            volume = held_out.volume
            start = time.perf_counter()
            prediction = predictor.predict(volume, "none")
            plain = time.perf_counter() - start
            start = time.perf_counter()
            found = predictor.search(volume, prediction)
            search = time.perf_counter() - start
            maps = {
                "deepbet: entropy": predictive_entropy(prediction.probabilities),
                "fragility (self-labelled replay): flip mass": found.maps["flip_mass"],
                "fragility (self-labelled replay): epistemic": found.maps["fragility_epistemic"],
                "fragility (self-labelled replay): total": found.maps["fragility_total"],
            }
            reference, spacing = held_out.majority > 0, held_out.geometry.spacing
            new = scores(held_out.case_id, prediction.labels, maps, reference, spacing)
            rows += new
            fragile = int(np.count_nonzero(found.maps["fragile"]))
            times.append(f"| {held_out.case_id} | {plain:.1f} | {replay_seconds:.1f} | {search:.1f} | {fragile} |")
            print("\n".join(new), "\n" + times[-1], flush=True)
    print("\n".join(["", *rows, "", *times]))


if __name__ == "__main__":
    main()
