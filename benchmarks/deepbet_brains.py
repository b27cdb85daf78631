"""The bundled deepbet package against deepbet's own pipeline, on real head MRIs with a reference brain mask.

    pip install deepbet fill_voids connected-components-3d
    apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron     # Colin27 (optional)
    python benchmarks/deepbet_brains.py [--mricron mricron/usr/share/mricron/templates]

Heads: nilearn's MNI152 1 mm template (brain mask from nilearn), the bundled ITK T1 head (its
skull-stripped version), and, when given, Colin27 ``ch2``
with its brain ``ch2bet`` from Debian's mricron-data. For each, in one process: our engine
(``predict_volume`` with the deepbet card: the locating network on the head at 128^3, the main
network on the brain's box at 256^3, RAS order; trilinear resampling of the logits back) and
deepbet's ``BrainExtraction`` (the same two networks, nearest-neighbour resizing, threshold 0.5, then
its largest component and filled holes), each timed over ``--repeats`` runs after one warm-up;
Dice against the reference mask.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from SegUncertaintyLib.axis_order import AxisOrder
from SegUncertaintyLib.data.mni import load_mni152
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def heads(mricron: Path | None) -> list[tuple[str, Volume, np.ndarray]]:
    mni = load_mni152(resolution=1)
    itk_brain = read_volume(sample_path("itk-t1-head-brain.nii.gz")).array > 0
    found = [
        ("MNI152 1 mm (nilearn)", mni.t1, mni.brain_mask),
        ("ITK T1 head 2x2x3 mm (bundled)", read_volume(sample_path("itk-t1-head.nii.gz")), itk_brain),
    ]
    if mricron is not None:
        brain = read_volume(mricron / "ch2bet.nii.gz").array > 0
        found.append(("Colin27 ch2 (mricron-data)", read_volume(mricron / "ch2.nii.gz"), brain))
    return found


def deepbet_mask(extractor, volume: Volume) -> np.ndarray:
    """deepbet's own pipeline on the RAS array, mapped back to the volume's (k, j, i) grid."""
    order = AxisOrder.for_geometry(volume.geometry, "RAS")
    ras = order.to_network(torch.from_numpy(volume.array)).numpy().copy()
    mask = extractor.run_model(ras) > 0.5
    mask = extractor.postprocess(mask)
    return order.from_network(torch.from_numpy(np.ascontiguousarray(mask))).numpy()


def timed(function, repeats: int) -> tuple[object, float]:
    result = function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return result, (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mricron", type=Path, help="folder of mricron-data's templates (ch2, ch2bet)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from deepbet import BrainExtraction

    extractor = BrainExtraction(no_gpu=True)
    package = load_package("deepbet")
    network = load_backbone(package)
    print("| head | ours: Dice | deepbet: Dice | ours: s | deepbet: s | time ratio |")
    print("|---|---|---|---|---|---|")
    for name, volume, reference in heads(args.mricron):
        prediction, ours_s = timed(
            lambda v=volume: predict_volume(v, package, network=network, device="cpu"), args.repeats
        )
        theirs, theirs_s = timed(lambda v=volume: deepbet_mask(extractor, v), args.repeats)
        ours = prediction.labels == 1
        print(
            f"| {name} | {dice(ours, reference):.4f} | {dice(theirs, reference):.4f} | {ours_s:.1f} | {theirs_s:.1f} "
            f"| {ours_s / theirs_s:.2f} |"
        )


if __name__ == "__main__":
    main()
