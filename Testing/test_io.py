"""Reading and writing volumes: exact geometry round trips and clear errors on bad input."""

import os

import numpy as np
import pytest
import SimpleITK as sitk

from SegUncertaintyLib.errors import InputError, OutputError
from SegUncertaintyLib.io import read_volume, to_sitk, write_volume
from SegUncertaintyLib.volume import axis_aligned_geometry

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_round_trip_keeps_oblique_anisotropic_geometry(tmp_path, oblique_geometry, suffix):
    rng = np.random.default_rng(0)
    array = rng.normal(size=oblique_geometry.shape).astype(np.float32)
    path = write_volume(array, oblique_geometry, tmp_path / f"v{suffix}")
    volume = read_volume(path)
    # NIfTI stores the affine in float32: sub-micrometre differences are allowed there
    atol = 1e-4 if "nii" in suffix else 1e-9
    assert volume.geometry.shape == oblique_geometry.shape
    assert np.allclose(volume.geometry.spacing, oblique_geometry.spacing, atol=atol)
    assert np.allclose(volume.geometry.origin, oblique_geometry.origin, atol=atol)
    assert np.allclose(volume.geometry.direction, oblique_geometry.direction, atol=atol)
    np.testing.assert_array_equal(volume.array, array)
    # and the same physical point for a voxel, as SimpleITK computes it
    image = sitk.ReadImage(str(path))
    point = image.TransformContinuousIndexToPhysicalPoint((3.0, 7.0, 11.0))
    assert np.allclose(volume.geometry.ijk_to_physical([3, 7, 11]), point, atol=1e-3)


def test_label_maps_keep_their_dtype(tmp_path, oblique_geometry):
    labels = (np.arange(np.prod(oblique_geometry.shape)) % 3).reshape(oblique_geometry.shape).astype(np.uint8)
    path = write_volume(labels, oblique_geometry, tmp_path / "labels.nrrd")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path, oblique_geometry):
    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 1000, size=oblique_geometry.shape).astype(np.int16)
    image = to_sitk(array, oblique_geometry)
    folder = tmp_path / "dicom"
    folder.mkdir()
    direction = oblique_geometry.direction_matrix
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0013": str(k + 1),
            "0018|0050": str(oblique_geometry.spacing[2]),
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)
    volume = read_volume(folder)
    assert volume.geometry.shape == oblique_geometry.shape
    assert np.allclose(volume.geometry.spacing, oblique_geometry.spacing, atol=1e-4)
    assert np.allclose(volume.geometry.origin, oblique_geometry.origin, atol=1e-4)
    assert np.allclose(volume.geometry.direction, oblique_geometry.direction, atol=1e-6)
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))


def _file(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _write(tmp_path, name, array, spacing=None):
    image = sitk.GetImageFromArray(array, isVector=False)
    if spacing:
        image.SetSpacing(spacing)
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.nrrd", "not found"),
        (lambda p: _file(p, "empty.nrrd", b""), "empty"),
        (lambda p: _file(p, "junk.nrrd", b"NRRD0004\ngarbage\n"), "cannot read"),
        (lambda p: _file(p, "text.nii.gz", b"hello"), "cannot read"),
        (lambda p: _write(p, "slice.nrrd", np.ones((8, 8), np.float32)), "2D"),
        (lambda p: _write(p, "time.nrrd", RNG.random((3, 4, 5, 6)).astype(np.float32)), "4D"),
        (lambda p: _write(p, "thin.nrrd", RNG.random((1, 5, 6)).astype(np.float32)), "one voxel thick"),
        (lambda p: _write(p, "flat.nrrd", np.full((4, 5, 6), 7.0, np.float32)), "constant"),
        (lambda p: _write(p, "nan.nrrd", np.where(np.eye(6)[None] > 0, np.nan, 1.0).repeat(3, 0)), "NaN"),
        (lambda p: _write(p, "inf.nrrd", np.where(np.eye(6)[None] > 0, np.inf, 1.0).repeat(3, 0)), "NaN or infinite"),
        (lambda p: (p / "nodicom").mkdir() or p / "nodicom", "without a DICOM series"),
    ],
)
def test_bad_inputs_get_clear_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message):
        read_volume(path)


def test_an_all_zero_output_map_reads_when_allowed(tmp_path):
    path = _write(tmp_path, "zeros.nrrd", np.zeros((4, 5, 6), np.float32))
    with pytest.raises(InputError, match="constant"):
        read_volume(path)  # as an input to segment: refused
    assert not read_volume(path, allow_constant=True).array.any()  # as an output (nothing found): read


def test_vector_image_is_refused(tmp_path):
    image = sitk.GetImageFromArray(RNG.random((4, 5, 6, 3)).astype(np.float32), isVector=True)
    sitk.WriteImage(image, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="components"):
        read_volume(tmp_path / "rgb.nrrd")


def test_failed_write_leaves_nothing_behind(tmp_path):
    geometry = axis_aligned_geometry((3, 4, 5))
    target = tmp_path / "not-a-folder"
    target.write_text("a file where a folder should be")
    with pytest.raises(OutputError):
        write_volume(np.zeros((3, 4, 5), np.float32), geometry, target / "out.nrrd")
    with pytest.raises(OutputError, match="use one of"):
        write_volume(np.zeros((3, 4, 5), np.float32), geometry, tmp_path / "out.png")
    assert sorted(os.listdir(tmp_path)) == ["not-a-folder"]


def test_written_files_are_readable_by_others(tmp_path):
    path = write_volume(np.zeros((3, 4, 5), np.float32), axis_aligned_geometry((3, 4, 5)), tmp_path / "v.nrrd")
    assert path.stat().st_mode & 0o044 == 0o044  # not mkstemp's 0600
