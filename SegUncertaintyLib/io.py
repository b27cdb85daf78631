"""Reading and writing volumes with SimpleITK, geometry kept exactly.

Readable: NRRD (``.nrrd``, ``.nhdr``), NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``)
and a folder holding one DICOM series. Writable: NRRD, NIfTI and single-file MetaImage (``.mha``).
Every write goes to a temporary file beside the target and is renamed into place, so a file is
either whole or absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError
from .fsutil import atomic_write
from .volume import Geometry, Volume

# Single-file formats only: a header + data pair (.nhdr, .mhd) cannot be renamed into place atomically.
WRITABLE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha")


def geometry_of(image: sitk.Image) -> Geometry:
    """The :class:`Geometry` of a 3D SimpleITK image."""
    return Geometry(
        shape=tuple(reversed(image.GetSize())),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=image.GetDirection(),
    )


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a ``(k, j, i)`` array placed on ``geometry`` (the array's dtype is kept)."""
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"{folder} is a folder without a DICOM series in it")
    # A folder with several series: take the one with the most slices, the usual main acquisition.
    files_per_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series_id = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files_per_series[series_id])
    return reader.Execute()


def read_volume(path: str | os.PathLike, allow_constant: bool = False) -> Volume:
    """Read a 3D scalar volume.

    Args:
        path: an image file (NRRD, NIfTI, MHA/MHD) or a folder with a DICOM series.

    Returns:
        A :class:`Volume` with a float32 ``(k, j, i)`` array and the file's exact geometry.

    Raises:
        InputError: the path is missing or unreadable, or the image is not a usable 3D scalar
            volume (2D, 4D, multi-component, empty, constant unless ``allow_constant`` (an output
            map may be all zero: nothing segmented, nothing fragile), or with NaN/Inf voxels).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            if path.stat().st_size == 0:
                raise InputError(f"input file is empty (0 bytes): {path}")
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:  # SimpleITK reports unreadable files as RuntimeError
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"cannot read {path} as a medical image ({first_line})") from None
    return _as_volume(image, path, allow_constant)


def _as_volume(image: sitk.Image, source: Path, allow_constant: bool = False) -> Volume:
    dim = image.GetDimension()
    size = image.GetSize()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector "
            "image); a scalar volume is needed"
        )
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        dim, size = 3, image.GetSize()
    if dim != 3:
        raise InputError(f"{source} is {dim}D (size {size}); a 3D volume is needed")
    if min(size) == 0:
        raise InputError(f"{source} is empty (size {size})")
    if 1 in size:
        raise InputError(f"{source} is one voxel thick (size {size}); a 3D volume is needed, not a 2D image")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise InputError(f"{source} has {bad} NaN or infinite voxel(s); fix or mask them before segmenting")
    if array.min() == array.max() and not allow_constant:
        raise InputError(f"{source} is constant (every voxel is {array.flat[0]:g}): there is nothing to segment")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise InputError(f"{source} has a degenerate direction matrix {image.GetDirection()}")
    return Volume(array=array, geometry=geometry_of(image))


def check_writable_suffix(path: Path) -> None:
    """Raise :class:`OutputError` unless ``path`` ends in a format :func:`write_volume` writes."""
    if _suffix(path) not in WRITABLE_SUFFIXES:
        raise OutputError(f"cannot write {path}: use one of {', '.join(WRITABLE_SUFFIXES)}")


def write_volume(array: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a ``(k, j, i)`` array on ``geometry`` to NRRD / NIfTI / MHA, atomically.

    Args:
        array: voxel values; the dtype is kept (uint8 for label maps, float32 for maps).
        geometry: the grid; written exactly (spacing, origin, direction).
        path: target file; its suffix picks the format.
        compress: gzip the voxel data.

    Returns:
        The written path.

    Raises:
        OutputError: the folder is not writable or the suffix is unknown.
    """
    path = Path(path)
    check_writable_suffix(path)
    image = to_sitk(array, geometry)
    try:
        with atomic_write(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    except (RuntimeError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
        raise OutputError(f"cannot write {path}: {reason}") from None
    return path
