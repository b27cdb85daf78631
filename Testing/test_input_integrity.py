"""Damaged input is an error, never a result: truncated files, corrupt streams, broken DICOM series.

Every damaged input is made for real: a volume written with SimpleITK whose bytes are then cut or
flipped, or a DICOM series written slice by slice with one slice removed, duplicated, moved or
turned. Each case runs ``seguncertainty predict`` in-process and checks the exit status, the one
``error: ...`` line on stderr (no traceback, no ITK noise: ``capfd`` sees the C++ side too) and that
the output folder is absent or empty.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.errors import InputError
from SegUncertaintyLib.io import (
    check_file_integrity,
    check_usable_size,
    dicom_series,
    geometry_of,
    read_volume,
    to_sitk,
    write_volume,
)
from SegUncertaintyLib.model.package import ModelPackage
from SegUncertaintyLib.pipeline import check_size, minimum_voxels
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry, Volume, axis_aligned_geometry

from .helpers import predict_args, rotation

DEMO = sample_path("lidc-nodule-demo.nrrd")
STUDY_UID = "1.2.826.0.1.3680043.2.1125.7"
SERIES_A, SERIES_B = f"{STUDY_UID}.1", f"{STUDY_UID}.2"


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def run_cli(capfd, *args: str) -> tuple[int, list[dict], str]:
    """Run the CLI in-process; returns the exit status, the JSON events on stdout and all of stderr."""
    status = main(list(args))
    captured = capfd.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return status, events, captured.err


def assert_refused(capfd, source: Path, out: Path, pattern: str, *extra: str) -> str:
    """``predict`` on ``source`` fails cleanly: exit 1, one ``error:`` line matching ``pattern``, no outputs."""
    status, events, err = run_cli(capfd, *predict_args(source, out, *extra))
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "WARNING" not in err
    assert events[-1]["event"] == "error" and events[-1]["message"] == lines[0][len("error: ") :]
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    return lines[0]


@pytest.fixture(scope="module")
def demo_int16() -> tuple[np.ndarray, Geometry]:
    """The bundled demo CT as int16 HU on its own grid (realistic, compressible data of 1.1 MB)."""
    volume = read_volume(DEMO)
    return np.round(volume.array).astype(np.int16), volume.geometry


def write_demo(tmp_path: Path, name: str, demo: tuple[np.ndarray, Geometry], compress: bool) -> Path:
    """The demo written by SimpleITK to ``tmp_path / name`` (the suffix picks the format)."""
    path = tmp_path / name
    sitk.WriteImage(to_sitk(*demo), str(path), useCompression=compress)
    return path


def cut(path: Path, keep: float = 0.5) -> Path:
    """Keep only the first ``keep`` share of a file's bytes (an interrupted copy)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def flip_byte(path: Path, where: float = 0.6) -> Path:
    """Invert one byte ``where`` through the file (a bad sector, a bit-flipping transfer)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    geometry: Geometry,
    series_uid: str = SERIES_A,
    description: str = "chest 1 mm",
    positions: np.ndarray | None = None,
    prefix: str = "slice",
) -> list[Path]:
    """Write ``(k, j, i)`` int16 ``array`` on ``geometry`` as a DICOM CT series, one file per slice.

    Each slice carries ImagePositionPatient (``positions[k]``, LPS mm; by default the grid's),
    ImageOrientationPatient (the grid's i and j directions), PixelSpacing and the series' UIDs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = to_sitk(array.astype(np.int16), geometry)
    direction = geometry.direction_matrix
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    if positions is None:
        positions = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(image.GetDepth())])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        for tag, value in {
            "0008|0060": "CT",
            "0008|0018": f"{series_uid}.{k + 1}",  # SOPInstanceUID
            "0020|000d": STUDY_UID,
            "0020|000e": series_uid,
            "0008|103e": description,
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{p:.6f}" for p in positions[k]),
            "0020|0013": str(k + 1),
            "0018|0050": f"{geometry.spacing[2]:g}",
        }.items():
            slice_.SetMetaData(tag, value)
        files.append(folder / f"{prefix}{k:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(slice_)
    return files


@pytest.fixture
def oblique_ct() -> tuple[np.ndarray, Geometry]:
    """A small oblique, anisotropic int16 CT-like volume (12 slices of 20 x 18 pixels)."""
    geometry = Geometry(
        shape=(12, 18, 20),
        spacing=(0.75, 0.9, 2.5),
        origin=(-40.0, 25.5, -120.0),
        direction=tuple(rotation([0.3, 1.0, 0.2], 14.0).ravel()),
    )
    rng = np.random.default_rng(3)
    array = rng.integers(-1000, 400, size=geometry.shape).astype(np.int16)
    return array, geometry


def assert_same_grid(volume, array: np.ndarray, geometry: Geometry) -> None:
    assert volume.geometry.shape == geometry.shape
    assert np.allclose(volume.geometry.spacing, geometry.spacing, atol=1e-4)
    assert np.allclose(volume.geometry.origin, geometry.origin, atol=1e-4)
    assert np.allclose(volume.geometry.direction, geometry.direction, atol=1e-6)
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))


SCOUT = axis_aligned_geometry((4, 18, 20), spacing=(0.75, 0.9, 5.0), origin=(-40.0, 25.5, -150.0))


def two_series(folder: Path, ct: tuple[np.ndarray, Geometry]) -> Path:
    """A study folder with the 12-slice oblique CT (SERIES_A) and a 4-slice axial scout (SERIES_B)."""
    array, geometry = ct
    write_dicom_series(folder, array, geometry, SERIES_A, "chest 1 mm", prefix="a")
    write_dicom_series(folder, array[:4], SCOUT, SERIES_B, "scout", prefix="b")
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# single files: truncated, short, corrupt

FILE_DAMAGE: list[tuple[str, bool, Callable[[Path], Path], str]] = [
    # ITK's NIfTI reader fills what is missing with zeros: these read "fine" without the check
    ("cut.nii.gz", True, cut, r"truncated or damaged: its gzip data ends before the end of the stream"),
    ("cut.nii", False, cut, r"truncated: its header announces 1120000 bytes of voxel data but only \d+ \(50\.0 %\)"),
    # ITK reads a flipped byte inside a gzip / zlib stream as different voxels, silently
    ("flipped.nii.gz", True, flip_byte, r"damaged: its gzip data is corrupt \(CRC check failed"),
    ("flipped.nrrd", True, flip_byte, r"damaged: its gzip data is corrupt"),
    ("flipped.mha", True, flip_byte, r"damaged: its zlib data is corrupt"),
    # ITK refuses these, but says "No such file or directory" (MetaImage) or in teem's words (NRRD)
    ("cut.nrrd", False, cut, r"truncated: its header announces 1120000 bytes of voxel data"),
    ("cut-gz.nrrd", True, cut, r"truncated or damaged: its gzip data ends"),
    ("cut.mha", False, cut, r"truncated: its header announces 1120000 bytes of voxel data"),
    ("cut-z.mha", True, cut, r"truncated or damaged: its zlib data ends"),
]


@pytest.mark.parametrize(("name", "compress", "damage", "pattern"), FILE_DAMAGE, ids=[c[0] for c in FILE_DAMAGE])
def test_damaged_file_is_an_error(capfd, tmp_path, demo_int16, name, compress, damage, pattern):
    source = damage(write_demo(tmp_path, name, demo_int16, compress))
    assert_refused(capfd, source, tmp_path / "out", pattern)


def test_whole_gzip_stream_shorter_than_the_nifti_header_says(capfd, tmp_path, demo_int16):
    short = cut(write_demo(tmp_path, "short.nii", demo_int16, compress=False), 0.8).read_bytes()
    source = tmp_path / "short.nii.gz"
    source.write_bytes(gzip.compress(short))  # a valid stream of a cut file
    assert_refused(capfd, source, tmp_path / "out", r"short\.nii\.gz is truncated: .* \(80\.0 %\)")


def test_detached_data_file_cut_short_or_missing(capfd, tmp_path, demo_int16):
    header = write_demo(tmp_path, "pair.mhd", demo_int16, compress=False)
    data = tmp_path / "pair.raw"
    cut(data, 0.9)
    assert_refused(capfd, header, tmp_path / "out", r"pair\.mhd is truncated: .* \(90\.0 %\)")
    data.unlink()
    assert_refused(capfd, header, tmp_path / "out", r"names the data file .*pair\.raw, which is missing")


HEALTHY = [
    ("v.nii.gz", True),
    ("v.nii", False),
    *((f"v{suffix}", compress) for suffix in (".nrrd", ".nhdr", ".mha", ".mhd") for compress in (True, False)),
]


@pytest.mark.parametrize(("name", "compress"), HEALTHY)
def test_healthy_files_pass_the_checks(tmp_path, demo_int16, name, compress):
    path = write_demo(tmp_path, name, demo_int16, compress)
    check_file_integrity(path)
    np.testing.assert_array_equal(read_volume(path).array, demo_int16[0].astype(np.float32))


@pytest.mark.parametrize("spacing", [(0.7, 25.0, 1.0), (0.7, 0.7, 20.5)])
def test_implausible_spacing_is_an_error(capfd, tmp_path, spacing):
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(tmp_path / "spacing.nrrd"))
    shown = " x ".join(f"{s:g}" for s in spacing).replace(".", r"\.")
    assert_refused(capfd, tmp_path / "spacing.nrrd", tmp_path / "out", rf"implausible voxel size {shown} mm")


def test_zero_spacing_is_refused_by_itk_already(capfd, tmp_path):
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32))
    path = tmp_path / "zero.nrrd"
    sitk.WriteImage(image, str(path), useCompression=False)
    path.write_bytes(path.read_bytes().replace(b"space directions: (1,0,0)", b"space directions: (0,0,0)", 1))
    assert_refused(capfd, path, tmp_path / "out", r"cannot read .*zero\.nrrd.*spacing")


# ---------------------------------------------------------------------------------------------------------------------
# DICOM series


def test_healthy_dicom_series_reads_with_its_geometry(tmp_path, oblique_ct):
    array, geometry = oblique_ct
    files = write_dicom_series(tmp_path / "ct", array, geometry)
    # a non-image object beside the slices (Raw Data Storage, no Pixel Data) is no lost slice
    header = files[0].read_bytes().rsplit(b"\xe0\x7f\x10\x00", 1)[0]
    ct_image, raw_data = b"1.2.840.10008.5.1.4.1.1.2\0", b"1.2.840.10008.5.1.4.1.1.66"  # same length
    (tmp_path / "ct" / "raw.dcm").write_bytes(header.replace(ct_image, raw_data))
    (series,) = dicom_series(tmp_path / "ct")
    assert series.uid == SERIES_A and len(series.files) == len(files) and series.description == "chest 1 mm"
    assert_same_grid(read_volume(tmp_path / "ct"), array, geometry)
    assert_same_grid(read_volume(tmp_path / "ct", series=SERIES_A), array, geometry)


def test_positions_within_tolerance_are_even(tmp_path, oblique_ct):
    """IPP rounded to 0.1 mm (the jitter of exporters and anonymisers) is an even series."""
    array, geometry = oblique_ct
    image = to_sitk(array, geometry)
    positions = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(geometry.shape[0])])
    positions = np.round(positions, 1)  # written to 0.1 mm, as some exporters and anonymisers do
    write_dicom_series(tmp_path / "ct", array, geometry, positions=positions)
    volume = read_volume(tmp_path / "ct")
    assert volume.geometry.shape == geometry.shape
    assert np.allclose(volume.geometry.spacing, geometry.spacing, atol=0.1)


def test_series_option_chooses_one_of_two_series(tmp_path, oblique_ct):
    array, geometry = oblique_ct
    study = two_series(tmp_path / "study", oblique_ct)
    assert [s.uid for s in dicom_series(study)] == [SERIES_A, SERIES_B]  # most slices first
    assert_same_grid(read_volume(study, series=SERIES_A), array, geometry)
    assert_same_grid(read_volume(study, series=SERIES_B), array[:4], SCOUT)
    with pytest.raises(InputError, match=rf"holds no DICOM series 1\.2\.3; it holds {SERIES_A} \(12 slices"):
        read_volume(study, series="1.2.3")
    with pytest.raises(InputError, match="is a file, not a DICOM folder"):
        read_volume(DEMO, series=SERIES_A)


def test_several_series_need_a_choice(capfd, tmp_path, oblique_ct):
    study = two_series(tmp_path / "study", oblique_ct)
    (tmp_path / "out").mkdir()  # an existing, empty output folder stays empty
    pattern = r"holds 2 DICOM series; choose one with --series UID"
    message = assert_refused(capfd, study, tmp_path / "out", pattern)
    assert f'{SERIES_A} (12 slices, "chest 1 mm")' in message and f'{SERIES_B} (4 slices, "scout")' in message


def test_predict_with_series_uses_the_chosen_series(capfd, tmp_path, oblique_ct):
    geometry = oblique_ct[1]
    two_series(tmp_path / "study", oblique_ct)
    assert_refused(
        capfd, tmp_path / "study", tmp_path / "bad", r"holds no DICOM series 1\.2\.3; it holds", "--series", "1.2.3"
    )
    out = tmp_path / "out"
    status, events, err = run_cli(
        capfd, *predict_args(tmp_path / "study", out, "--series", SERIES_A, "--uncertainty", "none")
    )
    assert status == 0 and events[-1]["event"] == "done", err
    summary = json.loads((out / "summary.json").read_text())
    grid = summary["input"]["geometry"]
    assert grid["shape_kji"] == list(geometry.shape) and np.allclose(grid["spacing_mm"], geometry.spacing, atol=1e-4)
    written = read_volume(out / "segmentation.nrrd", allow_constant=True).geometry
    assert written.shape == geometry.shape and np.allclose(written.direction, geometry.direction, atol=1e-6)
    assert np.allclose(written.spacing, geometry.spacing, atol=1e-4)


def test_the_report_reads_the_series_predict_read(capfd, tmp_path, oblique_ct):
    study = two_series(tmp_path / "study", oblique_ct)
    out = tmp_path / "out"
    status, _, err = run_cli(capfd, *predict_args(study, out, "--series", SERIES_A, "--report"))
    assert status == 0, err
    assert (out / "report.html").is_file()
    assert json.loads((out / "summary.json").read_text())["input"]["series"] == SERIES_A


def test_triage_makes_one_case_per_series_of_a_folder(capfd, tmp_path, oblique_ct):
    study = two_series(tmp_path / "inputs" / "study", oblique_ct)
    for file in study.iterdir():  # DICOM files without a suffix, as many exports name them
        file.rename(file.with_suffix(""))
    out = tmp_path / "triage"
    args = ["triage", "--input-dir", str(tmp_path / "inputs"), "--output-dir", str(out), "--device", "cpu"]
    status, events, err = run_cli(capfd, *args, "--progress", "json")
    assert status == 0 and events[-1]["outputs"]["cases"] == 2, err
    with open(out / "worklist.csv", newline="", encoding="utf-8") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"study-chest_1_mm", "study-scout"}
    for name, uid in (("study-chest_1_mm", SERIES_A), ("study-scout", SERIES_B)):
        assert rows[name]["input"] == f"{study} (series {uid})"
        if rows[name]["status"] == "done":
            assert json.loads((out / "cases" / name / "summary.json").read_text())["input"]["series"] == uid
    assert rows["study-chest_1_mm"]["status"] == "done", rows
    # a second triage finds both cases finished (or failed) and runs nothing again
    status, events, err = run_cli(capfd, *args, "--progress", "json")
    assert status == 0 and events[-1]["outputs"]["ran"] == 0, err


def _damaged_series(tmp_path: Path, oblique_ct, how: str) -> Path:
    array, geometry = oblique_ct
    folder = tmp_path / "ct"
    image = to_sitk(array, geometry)
    positions = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(geometry.shape[0])])
    normal = geometry.direction_matrix[:, 2]
    if how == "uneven":
        positions[6:] += 0.3 * geometry.spacing[2] * normal  # one gap 30 % longer
    if how == "tilted":
        positions += np.outer(np.arange(len(positions)) * 0.4, geometry.direction_matrix[:, 1])  # 0.4 mm per slice
    files = write_dicom_series(folder, array, geometry, positions=positions)
    if how == "missing":
        files[5].unlink()
    elif how == "duplicated":
        shutil.copy(files[5], folder / "copy-of-slice005.dcm")
    elif how == "turned":  # one slice written with another orientation
        turned = Geometry(geometry.shape, geometry.spacing, geometry.origin, tuple(rotation([0, 0, 1], 20.0).ravel()))
        write_dicom_series(tmp_path / "turned", array, turned, positions=positions)
        shutil.copy(tmp_path / "turned" / "slice007.dcm", files[7])
    elif how == "cut-header":  # GDCM skips an unreadable file: the series would silently be one slice shorter
        cut(files[-1], 0.3)
    elif how == "cut-pixels":
        cut(files[-1], 0.9)
    return folder


DICOM_DAMAGE = [
    ("missing", r"1 slice\(s\) missing between slice004\.dcm and slice006\.dcm: a gap of 5\.000 mm where the median"),
    ("duplicated", r"duplicated slice position\(s\): (copy-of-slice005\.dcm and slice005\.dcm|slice005\.dcm and copy)"),
    ("uneven", r"uneven slice spacing between slice005\.dcm and slice006\.dcm: a gap of 3\.250 mm"),
    ("turned", r"mixes orientations: 1 of 12 slices \(e\.g\. slice007\.dcm\)"),
    ("tilted", r"shifted sideways by up to 4\.40 mm .*gantry tilt"),
    ("cut-header", r"cannot read the DICOM image .*slice011\.dcm \(truncated or damaged\?\); no series takes it in"),
    ("cut-pixels", r"cannot read the DICOM image .*slice011\.dcm \(truncated or damaged\?\); no series takes it in"),
]


@pytest.mark.parametrize(("how", "pattern"), DICOM_DAMAGE, ids=[c[0] for c in DICOM_DAMAGE])
def test_damaged_dicom_series_is_an_error(capfd, tmp_path, oblique_ct, how, pattern):
    folder = _damaged_series(tmp_path, oblique_ct, how)
    assert_refused(capfd, folder, tmp_path / "out", pattern)


# ---------------------------------------------------------------------------------------------------------------------
# too small for the model


def test_volume_smaller_than_the_network_can_use(bundled_package):
    card = bundled_package.card
    needed = minimum_voxels(bundled_package)
    assert needed == (8, 8, 8)  # the U-Net halves its grid three times (strides 1, 2, 2, 2)
    check_size(read_volume(DEMO), bundled_package)
    small = axis_aligned_geometry((40, 40, 6), spacing=(1.0, 1.0, 1.0))  # 6 mm along i
    with pytest.raises(InputError, match=r"too small for lidc-nodule: 6\.0 x 40\.0 x 40\.0 mm is 6 x 40 x 40 voxels"):
        check_usable_size(small.resampled(card.target_spacing_mm), needed, card.name)
    # counted on the network's grid: 3 slices of 5 mm are 15 voxels of 1 mm, and a permuted storage is the same
    coarse = Volume(np.zeros((3, 40, 40), np.float32), axis_aligned_geometry((3, 40, 40), spacing=(0.7, 0.7, 5.0)))
    check_size(coarse, bundled_package)
    image = sitk.PermuteAxes(to_sitk(coarse.array, coarse.geometry), [2, 0, 1])
    check_size(Volume(sitk.GetArrayFromImage(image), geometry_of(image)), bundled_package)
    # nnU-Net plans give their strides too
    plans = {"arch_kwargs": {"strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2]]}}  # (D, H, W) = (k, j, i)
    nnunet = type(card)(**{**card.__dict__, "architecture": {"name": "nnUNet", "args": plans}})
    assert minimum_voxels(ModelPackage(bundled_package.path, nnunet)) == (2, 4, 4)


@pytest.mark.parametrize(
    "shape, spacing, model, pattern",
    [
        ((40, 40, 40), (1e-3, 1e-3, 1e-3), "lidc-nodule", r"too small for lidc-nodule"),  # 0.04 mm of scan
        ((3, 3, 3), (1.0, 1.0, 1.0), "deepbet", r"too small for deepbet"),  # a whole-volume network
    ],
)
def test_a_volume_too_small_for_the_model_is_refused_before_the_work(capfd, tmp_path, shape, spacing, model, pattern):
    rng = np.random.default_rng(0)
    grid = Geometry(shape, spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    source = write_volume(rng.normal(0, 100, shape).astype(np.float32), grid, tmp_path / "tiny.nrrd")
    assert_refused(capfd, source, tmp_path / "out", pattern, "--model", model)


def test_a_one_file_series_beside_the_volume_is_not_a_choice(tmp_path, oblique_ct):
    """A dose report or a single scout image in the folder cannot be the volume: the series is read, not refused."""
    array, geometry = oblique_ct
    write_dicom_series(tmp_path / "study", array, geometry, SERIES_A, "chest 1 mm", prefix="a")
    write_dicom_series(tmp_path / "study", array[:1], SCOUT.cropped((slice(0, 1), slice(None), slice(None))),
                       SERIES_B, "scout", prefix="b")  # fmt: skip
    assert_same_grid(read_volume(tmp_path / "study"), array, geometry)
