"""One physical image stored several ways: does the answer move?

    python benchmarks/storage_invariance.py [--lidc N]

Each case (the bundled demo, and with ``--lidc N`` the first N nodules of the LIDC test split after
``seguncertainty prepare-data lidc``) is stored five ways:

- as it is (the reference);
- with its axes permuted and reversed, and as RAS (x and y reversed): the same voxels, exactly;
- resampled (SimpleITK, linear) onto an oblique 0.7 x 0.9 x 2.5 mm grid turned 25 degrees, inside the
  case's box;
- those oblique voxels resampled again onto an axis-aligned grid of the same spacing: what the
  resampling alone loses, the floor for the oblique storage.

Every storage is predicted (backbone and head, one pass) in the card's frame (``LPS``: the patient's
axes) and, side by side in the same process, in the input's voxel frame (``voxel``: what the engine
did before, and what nnU-Net does). Each segmentation is moved onto the reference grid as a physical
object (its nodule probability resampled linearly by SimpleITK, > 0.5), and against the reference it
reports the shift of its centroid (mm) and its Dice, then the number of high-risk regions, their
volume, the predicted volume on the storage's own grid and the applicability verdict (novelty score,
called outside); for the oblique storage also the Dice against the axis-aligned floor, which holds
the same information.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import numpy as np
import SimpleITK as sitk
import torch
from common import ROOT  # noqa: F401  first: puts the repository on the import path

from SegUncertaintyLib.applicability import assess, novelty_tap
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import geometry_of, read_volume, to_sitk
from SegUncertaintyLib.metrics import dice
from SegUncertaintyLib.model.backbones import load_backbone
from SegUncertaintyLib.model.package import ModelPackage, load_package
from SegUncertaintyLib.predict_folder import review_regions
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.segwithu.package import load_head
from SegUncertaintyLib.volume import Geometry, Volume

OBLIQUE_SPACING = np.array([0.7, 0.9, 2.5])
OBLIQUE_DEGREES = 25.0


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def as_volume(image: sitk.Image) -> Volume:
    return Volume(sitk.GetArrayFromImage(image).astype(np.float32), geometry_of(image))


def resample(image: sitk.Image, geometry: Geometry, extrapolate: bool = False) -> sitk.Image:
    """Linear resampling by SimpleITK; outside ``image``'s box 0, or with ``extrapolate`` its nearest voxel."""
    blank = to_sitk(np.zeros(geometry.shape, np.float32), geometry)
    return sitk.Resample(image, blank, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, extrapolate)


def storages(volume: Volume) -> dict[str, Volume]:
    """The case stored five ways (see the module text)."""
    image = to_sitk(volume.array, volume.geometry)
    g = volume.geometry
    centre = g.ijk_to_physical(np.asarray(g.shape[::-1], dtype=np.float64) / 2 - 0.5)
    direction = rotation([1.0, 0.4, 0.2], OBLIQUE_DEGREES)
    side = 0.75 * min(g.extent_mm)  # turned by 25 degrees, the box stays inside the case's box
    shape = tuple(int(n) for n in np.round(side / OBLIQUE_SPACING)[::-1])
    origin = centre - direction @ (OBLIQUE_SPACING * (np.asarray(shape[::-1]) / 2 - 0.5))
    oblique_grid = Geometry(shape, tuple(OBLIQUE_SPACING), tuple(origin), tuple(direction.ravel()))
    oblique = resample(image, oblique_grid)
    corners = oblique_grid.ijk_to_physical(
        np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * (np.asarray(shape[::-1]) - 1)
    )
    low = corners.min(axis=0)
    size = np.round((corners.max(axis=0) - low) / OBLIQUE_SPACING).astype(int) + 1
    aligned_grid = Geometry(tuple(int(n) for n in size[::-1]), tuple(OBLIQUE_SPACING), tuple(low), np.eye(3).ravel())
    return {
        "as stored": volume,
        "axes permuted and reversed": as_volume(sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])),
        "RAS storage": as_volume(sitk.Flip(image, [True, True, False])),
        "oblique 0.7x0.9x2.5 mm": as_volume(oblique),
        "oblique, then axis-aligned": as_volume(resample(oblique, aligned_grid, extrapolate=True)),
    }


def with_frame(package: ModelPackage, frame: str) -> ModelPackage:
    card = package.card
    inference = replace(card.inference, frame=frame)
    return ModelPackage(package.path, type(card)(**{**card.__dict__, "inference": inference}))


def centroid_mm(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    points = np.argwhere(labels == 1)[:, ::-1].astype(np.float64)
    return geometry.ijk_to_physical(points).mean(axis=0) if len(points) else np.full(3, np.nan)


def moved(probability: np.ndarray, geometry: Geometry, reference: Geometry) -> np.ndarray:
    """The nodule probability on ``reference``'s grid (SimpleITK, linear), thresholded at 0.5."""
    return sitk.GetArrayFromImage(resample(to_sitk(probability, geometry), reference)) > 0.5


def measure(volume: Volume, package: ModelPackage, network, head) -> dict:
    started = time.perf_counter()
    taps = [novelty_tap(package)]
    prediction = predict_volume(volume, package, network=network, head=head, device="cpu", taps=taps)
    seconds = time.perf_counter() - started
    verdict = assess(volume, prediction, package)
    _, regions = review_regions(prediction)
    labels = prediction.labels
    return {
        "labels": labels,
        "probability": prediction.probabilities[1],
        "geometry": volume.geometry,
        "centroid": centroid_mm(labels, volume.geometry),
        "regions": len(regions["regions"]),
        "flagged_ml": sum(r["volume_ml"] for r in regions["regions"]),
        "volume_ml": float((labels == 1).sum() * volume.geometry.voxel_volume_ml),
        "seconds": seconds,
        "novelty": verdict["novelty"],
        "outside": not verdict["within"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lidc", type=int, default=0, help="also the first N nodules of the LIDC test split")
    args = parser.parse_args()
    torch.set_num_threads(2)
    package = load_package("lidc-nodule")
    network, head = load_backbone(package), load_head(package)
    cases = {"demo": read_volume(sample_path("lidc-nodule-demo.nrrd"))}
    if args.lidc:
        from SegUncertaintyLib.data.datasets import load_dataset_cases

        for case in load_dataset_cases("lidc", "test", limit=args.lidc):
            cases[case.case_id] = case.volume
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU")
    rows: dict[tuple[str, str], list[dict]] = {}
    for case_id, volume in cases.items():
        stored = storages(volume)
        for frame in ("LPS", "voxel"):
            framed = with_frame(package, frame)
            results = {name: measure(v, framed, network, head) for name, v in stored.items()}
            reference, floor = results["as stored"], results["oblique, then axis-aligned"]
            for name, result in results.items():
                on_reference = moved(result["probability"], result["geometry"], reference["geometry"])
                shift = centroid_mm(on_reference.astype(np.uint8), reference["geometry"]) - reference["centroid"]
                row = {
                    "shift_mm": float(np.linalg.norm(shift)),
                    "dice": dice(on_reference, reference["labels"] == 1),
                    "regions": result["regions"],
                    "flagged_ml": result["flagged_ml"],
                    "volume_ml": result["volume_ml"],
                    "seconds": result["seconds"],
                    "novelty": result["novelty"],
                    "outside": float(result["outside"]),
                }
                if name == "oblique 0.7x0.9x2.5 mm":
                    on_floor = moved(result["probability"], result["geometry"], floor["geometry"])
                    row["dice_vs_floor"] = dice(on_floor, floor["labels"] == 1)
                rows.setdefault((frame, name), []).append(row)
                print(case_id, frame, name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    print(f"\n{len(cases)} case(s); mean (worst) over cases")
    columns = ["frame", "storage", "centroid shift mm", "Dice vs as stored", "Dice vs floor", "regions"]
    columns += ["flagged mL", "volume mL", "novelty", "called outside", "s"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for (frame, name), found in rows.items():

        def cell(key: str, worst: str, found: list[dict] = found) -> str:
            values = [r[key] for r in found if key in r]
            if not values:
                return "–"
            extreme = max(values) if worst == "max" else min(values)
            return f"{np.mean(values):.3f} ({extreme:.3f})" if len(values) > 1 else f"{values[0]:.3f}"

        counts = [r["regions"] for r in found]
        cells = [frame, name, cell("shift_mm", "max"), cell("dice", "min"), cell("dice_vs_floor", "min")]
        cells += ["/".join(map(str, counts)) if len(counts) <= 3 else f"{np.mean(counts):.1f}"]
        cells += [cell("flagged_ml", "max"), cell("volume_ml", "max"), cell("novelty", "max")]
        cells += [
            f"{int(sum(r['outside'] for r in found))}/{len(found)}",
            f"{np.mean([r['seconds'] for r in found]):.2f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
