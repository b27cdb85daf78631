"""Our reading of an nnU-Net v2 folder against nnU-Net's own predictor, on LIDC test nodules.

    pip install nnunetv2 -c <(echo torch==2.13.0) && pip uninstall -y torchvision   # keep the CPU torch
    SEGUNCERTAINTY_CACHE=... python benchmarks/nnunet_equivalence.py [--cases 60]

nnU-Net's predictor is set up with ``manual_initialization`` and a network built by nnU-Net's
``get_network_from_plans`` (its trained-model-folder loader imports every trainer, some of which
need a torchvision matching torch). Both predict without mirroring.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from SegUncertaintyLib.data.lidc_dataset import load_cases
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.metrics import majority_vote
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.nnunet import read_checkpoint
from SegUncertaintyLib.model.package import load_package

FOLDER = Path("Testing/data/nnunet-lidc-tiny/Dataset901_LIDCNodule/nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def nnunet_predictor(folder: Path) -> nnUNetPredictor:
    plans = PlansManager(json.loads((folder / "plans.json").read_text()))
    configuration = plans.get_configuration("3d_fullres")
    checkpoint = read_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    network = get_network_from_plans(
        configuration.network_arch_class_name,
        configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        1,
        2,
        deep_supervision=False,
    )
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.manual_initialization(
        network,
        plans,
        configuration,
        [checkpoint["network_weights"]],
        json.loads((folder / "dataset.json").read_text()),
        "nnUNetTrainer_1epoch",
        checkpoint["inference_allowed_mirroring_axes"],
    )
    return predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=60)
    args = parser.parse_args()
    predictor = nnunet_predictor(FOLDER)
    package = load_package(FOLDER)
    network = load_backbone(package)
    agreement, identical, ours_vs_raters, theirs_vs_raters = [], [], [], []
    for case in load_cases("test", limit=args.cases):
        spacing = {"spacing": list(case.geometry.spacing[::-1])}
        theirs = predictor.predict_single_npy_array(case.image.astype(np.float32)[None], spacing, None, None, False)
        ours = predict_volume(case.volume, package, network=network, device="cpu").labels
        majority = majority_vote(case.raters) > 0
        agreement.append(dice(theirs == 1, ours == 1))
        identical.append(float((theirs == ours).mean()))
        ours_vs_raters.append(dice(ours == 1, majority))
        theirs_vs_raters.append(dice(theirs == 1, majority))
    print(f"{len(agreement)} LIDC test nodules")
    print(f"Dice(ours, nnU-Net): mean {np.mean(agreement):.4f}, min {np.min(agreement):.4f}")
    print(f"identical voxels: {np.mean(identical):.5f}")
    print(f"Dice vs the raters' majority: ours {np.mean(ours_vs_raters):.4f}, nnU-Net {np.mean(theirs_vs_raters):.4f}")


if __name__ == "__main__":
    main()
