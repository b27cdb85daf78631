"""Make the small nnU-Net v2 trained-model folder the tests load (Testing/data/nnunet-lidc-tiny), with nnunetv2 itself.

    pip install nnunetv2 -c <(echo torch==2.13.0) && pip uninstall -y torchvision   # keep the CPU torch
    SEGUNCERTAINTY_CACHE=... python Testing/data/make_nnunet_model.py [--work /tmp/nnunet] [--cases 12]

Writes 12 LIDC backbone-train nodules (prepare-data lidc; majority label) as an nnU-Net raw dataset,
runs nnU-Net's fingerprinting, planning and preprocessing for 3d_fullres, narrows the planned
network to 8-16-32-64 features (so the checkpoint is 3 MB; the plans' own edit, as nnU-Net's custom
plans do), and trains fold 0 with nnU-Net's nnUNetTrainer_1epoch on the CPU (250 iterations,
about 2 minutes here). The trainer class is used directly because nnUNetv2_train imports every
trainer, some of which need a torchvision build matching the installed torch. Copies the
trained-model folder (plans, dataset, fingerprint, fold_0 checkpoint and log) into the repository.
"""

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

DATASET = "Dataset901_LIDCNodule"
TARGET = Path(__file__).resolve().parent / "nnunet-lidc-tiny"


def write_raw(raw: Path, cases: int) -> None:
    from SegUncertaintyLib.data.lidc_dataset import load_cases
    from SegUncertaintyLib.io import write_volume
    from SegUncertaintyLib.metrics import majority_vote

    root = raw / DATASET
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    chosen = load_cases("train", limit=cases)
    for n, case in enumerate(chosen):
        write_volume(case.image.astype(np.float32), case.geometry, root / "imagesTr" / f"lidc_{n:03d}_0000.nii.gz")
        labels = majority_vote(case.raters).astype(np.uint8)
        write_volume(labels, case.geometry, root / "labelsTr" / f"lidc_{n:03d}.nii.gz")
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "nodule": 1},
        "numTraining": len(chosen),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet"))
    parser.add_argument("--cases", type=int, default=12)
    args = parser.parse_args()
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{name}"] = str(args.work / name)
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    write_raw(args.work / "raw", args.cases)
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "3d_fullres", "-np", "1"], check=True)

    plans_path = args.work / "preprocessed" / DATASET / "nnUNetPlans.json"
    plans = json.loads(plans_path.read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32, 64]
    plans_path.write_text(json.dumps(plans, indent=2))

    import torch
    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import nnUNetTrainer_1epoch

    torch.manual_seed(0)
    dataset_json = json.loads((args.work / "preprocessed" / DATASET / "dataset.json").read_text())
    trainer = nnUNetTrainer_1epoch(
        {**plans, "continue_training": False}, "3d_fullres", 0, dataset_json, torch.device("cpu")
    )
    trainer.run_training()

    source = Path(trainer.output_folder_base)
    target = TARGET / DATASET / source.name
    shutil.rmtree(TARGET, ignore_errors=True)
    (target / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(source / name, target / name)
    shutil.copy2(source / "fold_0" / "checkpoint_final.pth", target / "fold_0" / "checkpoint_final.pth")
    log = sorted((source / "fold_0").glob("training_log_*.txt"))[0]
    shutil.copy2(log, target / "fold_0" / "training_log.txt")
    print(target)


if __name__ == "__main__":
    main()
