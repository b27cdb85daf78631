"""Reading and writing volumes with SimpleITK, geometry kept exactly, damaged input refused.

Readable: NRRD (``.nrrd``, ``.nhdr``), NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``)
and a folder holding a DICOM series. Writable: NRRD, NIfTI and single-file MetaImage (``.mha``).
Every write goes to a temporary file beside the target and is renamed into place, so a file is
either whole or absent.

Reading never fills damage in silently. Before SimpleITK reads a file, :func:`check_file_integrity`
compares the voxel data with what the header announces (ITK's NIfTI reader fills a short file with
zeros) and decompresses every gzip, zlib or bzip2 stream once in chunks, which verifies its end
marker and checksum (ITK reads a gzip stream with a flipped byte as different voxels, silently). A
DICOM folder is checked slice by slice (:func:`check_dicom_slices`: positions, orientation, sizes),
and a folder holding several series needs the choice of one. Every problem raises
:class:`~.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError
from .file_kinds import WRITABLE_SUFFIXES, suffix
from .fsutil import atomic_write
from .volume import Geometry, Volume

# Single-file formats only: a header + data pair (.nhdr, .mhd) cannot be renamed into place atomically.

# Voxel sizes outside (0, MAX_SPACING_MM] are a broken header (or metres, or microns), not a scan.
MAX_SPACING_MM = 20.0


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


# ---------------------------------------------------------------------------------------------------------------------
# Single files: is all the voxel data there, and are the compressed streams whole?

CHUNK = 1 << 20  # bytes read (and at most produced) per step when streaming compressed data


@dataclass(frozen=True)
class _DataLayout:
    """Where a header says the voxel data lies."""

    file: Path  # the file holding the voxel data
    offset: int | None  # its first byte in ``file`` (None: the data is the last ``nbytes`` of the file)
    encoding: str  # "raw", "gzip", "zlib" or "bzip2"
    nbytes: int | None  # bytes of voxel data the header announces, uncompressed (None: unknown)
    skip_after_decoding: int = 0  # bytes before the voxels in the decompressed stream (NRRD "byte skip")
    line_skip: int = 0  # text lines before the data in ``file`` (NRRD "line skip")


def _truncated(path: Path, expected: int, found: int, what: str = "voxel data") -> InputError:
    share = 100.0 * found / expected if expected else 0.0
    return InputError(
        f"{path} is truncated: its header announces {expected} bytes of {what} but only {found} "
        f"({share:.1f} %) are there; the file was cut short (an interrupted copy or download?)"
    )


def _decompressed_length(stream: BinaryIO, encoding: str, path: Path, keep: int = 0) -> tuple[int, bytes]:
    """Decompress ``stream`` from its current position to its end, chunk by chunk.

    Checks the end-of-stream marker and the checksum (gzip CRC-32, zlib Adler-32, bzip2 CRC). Memory
    stays at about :data:`CHUNK` whatever the size of the data.

    Returns:
        The decompressed length in bytes and its first ``keep`` bytes.

    Raises:
        InputError: the stream ends early, or is corrupt.
    """
    total, head = 0, b""
    try:
        if encoding == "zlib":
            inflater = zlib.decompressobj()
            while not inflater.eof:
                data = inflater.unconsumed_tail or stream.read(CHUNK)
                block = inflater.decompress(data, CHUNK)  # with no input left, what zlib still holds
                if not data and not block:
                    raise EOFError
                head += block[: keep - len(head)] if len(head) < keep else b""
                total += len(block)
            return total, head
        with gzip.GzipFile(fileobj=stream) if encoding == "gzip" else bz2.BZ2File(stream) as decoded:
            while block := decoded.read(CHUNK):
                head += block[: keep - len(head)] if len(head) < keep else b""
                total += len(block)
        return total, head
    except EOFError:
        raise InputError(
            f"{path} is truncated or damaged: its {encoding} data ends before the end of the stream "
            "(an interrupted copy or download?)"
        ) from None
    except (OSError, zlib.error, ValueError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path} is damaged: its {encoding} data is corrupt ({exc})") from None


def _check_layout(path: Path, layout: _DataLayout) -> None:
    """Raise :class:`InputError` when the data ``layout`` describes is missing, short or corrupt."""
    if not layout.file.is_file():
        raise InputError(f"{path} names the data file {layout.file}, which is missing")
    size = layout.file.stat().st_size
    with open(layout.file, "rb") as stream:
        offset = layout.offset or 0
        stream.seek(offset)
        for _ in range(layout.line_skip):
            if not stream.readline():
                break
        start = stream.tell()
        if layout.encoding == "raw":
            found = size if layout.offset is None else max(size - start, 0)
            if layout.nbytes is not None and found < layout.nbytes:
                raise _truncated(path, layout.nbytes, found)
            return
        length, _ = _decompressed_length(stream, layout.encoding, path)
    if layout.nbytes is not None and length < layout.skip_after_decoding + layout.nbytes:
        raise _truncated(path, layout.skip_after_decoding + layout.nbytes, length, "decompressed data")


def _nifti_sizes(header: bytes) -> tuple[int, int] | None:
    """``(vox_offset, data bytes)`` of a single-file NIfTI-1 or NIfTI-2 header, None when it is not one."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            magic = header[344:347]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            magic = header[4:7]
            break
    else:
        return None
    ndim = dims[0]
    if magic not in (b"n+1", b"n+2") or not 1 <= ndim <= 7 or bitpix <= 0 or not math.isfinite(offset):
        return None  # a header/image pair (ni1), or a header ITK will refuse itself
    counts = dims[1 : ndim + 1]
    if min(counts) <= 0:
        return None
    return int(offset), math.prod(counts) * bitpix // 8


def _check_nifti(path: Path) -> None:
    with open(path, "rb") as stream:
        if suffix(path) == ".nii.gz":
            if stream.read(2) != b"\x1f\x8b":
                return  # not gzip at all: ITK says it cannot read it
            stream.seek(0)
            length, head = _decompressed_length(stream, "gzip", path, keep=540)
        else:
            length, head = path.stat().st_size, stream.read(540)
    sizes = _nifti_sizes(head)
    if sizes is not None and length < sum(sizes):
        raise _truncated(path, sizes[1], max(length - sizes[0], 0))


def _header_lines(stream: BinaryIO, limit: int = 1 << 20) -> list[str] | None:
    """The text lines of a header up to its first empty line (None when there is none within ``limit`` bytes)."""
    lines: list[str] = []
    while stream.tell() < limit:
        line = stream.readline()
        if not line:
            return lines  # a header without data after it: ITK reports that itself
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return lines
        lines.append(text)
    return None


_NRRD_TYPES = (
    (1, "signed char,int8,int8_t,uchar,unsigned char,uint8,uint8_t"),
    (2, "short,short int,signed short,signed short int,int16,int16_t"),
    (2, "ushort,unsigned short,unsigned short int,uint16,uint16_t"),
    (4, "int,signed int,int32,int32_t,uint,unsigned int,uint32,uint32_t,float"),
    (8, "longlong,long long,long long int,signed long long,signed long long int,int64,int64_t"),
    (8, "ulonglong,unsigned long long,unsigned long long int,uint64,uint64_t,double"),
)
NRRD_TYPE_BYTES = {name: size for size, names in _NRRD_TYPES for name in names.split(",")}
NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}


def _nrrd_layout(path: Path) -> _DataLayout | None:
    """Where an NRRD header puts its data (None: a form this check leaves to ITK, e.g. text encodings)."""
    with open(path, "rb") as stream:
        if stream.read(4) != b"NRRD":
            return None
        stream.seek(0)
        lines = _header_lines(stream)
        header_end = stream.tell()
    if lines is None:
        return None
    fields: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#") and not value.startswith("="):  # not comments, not key:=value pairs
            fields[key.strip().lower()] = value.strip()
    encoding = NRRD_ENCODINGS.get(fields.get("encoding", "").lower())
    data_file = fields.get("data file", fields.get("datafile"))
    if encoding is None or (data_file is not None and (data_file.upper().startswith("LIST") or " " in data_file)):
        return None  # text encodings, lists and patterns of data files: ITK checks those
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
        kind = " ".join(fields.get("type", "").lower().split())
        element = int(fields["block size"]) if kind == "block" else NRRD_TYPE_BYTES.get(kind)
        byte_skip = int(fields.get("byte skip", "0"))
        line_skip = int(fields.get("line skip", "0"))
    except (KeyError, ValueError):
        return None  # a malformed header: ITK says what is wrong with it
    nbytes = None if element is None else math.prod(sizes) * element  # unknown: ITK refuses the type itself
    if data_file is None:
        file, offset = path, header_end
    else:
        file, offset = path.parent / data_file, 0
    if encoding == "raw":
        return _DataLayout(file, None if byte_skip == -1 else offset + byte_skip, "raw", nbytes, 0, line_skip)
    return _DataLayout(file, offset, encoding, nbytes, max(byte_skip, 0), line_skip)


META_TYPE_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _metaimage_layout(path: Path) -> _DataLayout | None:
    """Where a MetaImage header puts its data (None: a form this check leaves to ITK)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as stream:
        while stream.tell() < 1 << 20:
            line = stream.readline()
            if not line:
                return None
            key, sep, value = line.decode("latin-1").partition("=")
            if not sep:
                continue
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        else:
            return None
        data_start = stream.tell()
    data_file = fields.get("ElementDataFile", "")
    if fields.get("BinaryData", "True").lower() == "false" or not data_file:
        return None
    if data_file != "LOCAL" and (data_file.upper() == "LIST" or " " in data_file or "%" in data_file):
        return None  # one file per slice: ITK checks those
    try:
        sizes = [int(s) for s in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        element = META_TYPE_BYTES.get(fields.get("ElementType", ""))  # MET_LONG's size depends on the writer
        header_size = int(fields.get("HeaderSize", "0"))
    except (KeyError, ValueError):
        return None
    nbytes = None if element is None else math.prod(sizes) * channels * element
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if data_file == "LOCAL":
        file, offset = path, data_start
    else:
        file, offset = path.parent / data_file, None if header_size == -1 else header_size
    if compressed:
        return _DataLayout(file, offset or 0, "zlib", nbytes)
    return _DataLayout(file, offset, "raw", nbytes)


def check_file_integrity(path: str | os.PathLike) -> None:
    """Refuse a volume file whose voxel data is shorter than its header says, or whose compression is damaged.

    NIfTI (``.nii``, ``.nii.gz``): the data must reach ``vox_offset + prod(dim) * bitpix / 8`` bytes.
    NRRD (``.nrrd``, ``.nhdr``, raw / gzip / bzip2) and MetaImage (``.mha``, ``.mhd``, raw or
    compressed): the data after the header (or in the named data file) must hold ``prod(sizes) *
    bytes per voxel``. Every compressed stream is decompressed once, in chunks of :data:`CHUNK`
    bytes (no second copy of the volume is held), which also verifies its end marker and checksum.
    Forms this does not know (text encodings, one file per slice) are left to ITK's own checks.

    Args:
        path: a volume file.

    Raises:
        InputError: the file is truncated or its compressed data is corrupt.
    """
    path = Path(path)
    kind = suffix(path)
    if kind in (".nii", ".nii.gz"):
        _check_nifti(path)
        return
    layout = {".nrrd": _nrrd_layout, ".nhdr": _nrrd_layout, ".mha": _metaimage_layout, ".mhd": _metaimage_layout}.get(
        kind, lambda _: None
    )(path)
    if layout is not None:
        _check_layout(path, layout)


# ---------------------------------------------------------------------------------------------------------------------
# DICOM: one series, complete, evenly spaced, one orientation

# Slice positions: two slices closer than this along the normal are at the same position (a duplicate).
DUPLICATE_MM = 0.01
# Slice gaps may differ from their median by this share of it, or by EVEN_MM, whichever is larger: positions
# rounded to 0.1 mm (some exporters and anonymisers) are even; a missing slice (a gap of 100 % more) never is.
EVEN_FRACTION, EVEN_MM = 0.1, 0.1
# Orientation cosines (ImageOrientationPatient) of all slices may differ by this much.
ORIENTATION_TOLERANCE = 1e-4
# A slice may lie this share of the smallest in-plane pixel size (or SHEAR_MM) sideways of the line the grid puts it on.
SHEAR_FRACTION, SHEAR_MM = 0.1, 0.1

DICOM_POSITION, DICOM_ORIENTATION, DICOM_PIXEL_SPACING = "0020|0032", "0020|0037", "0028|0030"
DICOM_SERIES_DESCRIPTION = "0008|103e"


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series of a folder: its SeriesInstanceUID, its files (as GDCM orders them) and its description."""

    uid: str
    files: tuple[str, ...]
    description: str = ""

    def label(self) -> str:
        """``UID (N slices, "description")`` for messages."""
        described = f', "{self.description}"' if self.description else ""
        return f"{self.uid} ({len(self.files)} slice{'s' if len(self.files) != 1 else ''}{described})"


def _dicom_tag(reader: sitk.ImageFileReader, tag: str) -> str:
    return reader.GetMetaData(tag).strip().strip("\0").strip() if reader.HasMetaDataKey(tag) else ""


def _dicom_header(file: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"cannot read the DICOM file {file} (damaged or truncated?)") from None
    return reader


def dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """The DICOM series of a folder (not its sub-folders), most slices first.

    GDCM leaves out of every series both the files it cannot read and non-image objects (structured
    reports, RT structure sets, presentation states). A file it left out is a lost slice, and an
    error, when it is of the same SOP class as the slices of a series (CT Image Storage, ...) or
    holds a Pixel Data element: a series would otherwise silently lose its first or last slice.

    Raises:
        InputError: the folder holds no series, or a lost slice.
    """
    folder = Path(folder)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{folder} is a folder without a DICOM series in it")
    found = []
    for uid in ids:
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        description = _dicom_tag(_dicom_header(files[0]), DICOM_SERIES_DESCRIPTION) if files else ""
        found.append(DicomSeries(uid, files, description))
    listed = {os.path.realpath(f) for series in found for f in series.files}
    classes = {_dicom_file_head(Path(series.files[0]))[0] for series in found if series.files} - {None}
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or os.path.realpath(entry) in listed:
            continue
        sop_class, has_pixels = _dicom_file_head(entry)
        if sop_class in classes or has_pixels:
            raise InputError(f"cannot read the DICOM image {entry} (truncated or damaged?); no series takes it in")
    return sorted(found, key=lambda s: (-len(s.files), s.uid))


def volume_series(found: Sequence[DicomSeries]) -> list[DicomSeries]:
    """The series of a folder that can be its volume: a series of one file (a dose report, a single
    scout image) cannot, unless there is nothing else."""
    return [s for s in found if len(s.files) >= 2] or list(found)


PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian, as it precedes the voxels of an image
SOP_CLASS_TAG = b"\x02\x00\x02\x00UI"  # (0002,0002) MediaStorageSOPClassUID, explicit VR in the file meta


def _dicom_file_head(path: Path) -> tuple[str | None, bool]:
    """``(MediaStorageSOPClassUID, holds a Pixel Data element)`` of a DICOM file; ``(None, False)`` for others."""
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            if stream.read(4) != b"DICM":
                return None, False
            data = stream.read()
    except OSError:
        return None, False
    at = data.find(SOP_CLASS_TAG, 0, 1024)
    sop_class = None
    if at >= 0:
        length = int.from_bytes(data[at + 6 : at + 8], "little")
        sop_class = data[at + 8 : at + 8 + length].rstrip(b"\0 ").decode("ascii", "replace") or None
    return sop_class, PIXEL_DATA_TAG in data


def _numbers(reader: sitk.ImageFileReader, tag: str, count: int, file: str, name: str) -> np.ndarray:
    text = _dicom_tag(reader, tag)
    if not text:
        raise InputError(f"the DICOM slice {file} has no {name} ({tag.replace('|', ',')}): its geometry is unknown")
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        values = np.array([])
    if values.size != count or not np.isfinite(values).all():
        raise InputError(f"the DICOM slice {file} has an unreadable {name} ({text!r})")
    return values


def check_dicom_slices(files: Sequence[str]) -> list[str]:
    """Check that the slices of one series form a regular grid; returns the files in position order.

    Each slice must have ImagePositionPatient, ImageOrientationPatient and PixelSpacing; all must
    share the orientation (cosines within :data:`ORIENTATION_TOLERANCE`), the pixel spacing and the
    rows and columns. Along the slice normal (row x column cosines), no two slices may be within
    :data:`DUPLICATE_MM` (0.01 mm) of each other, and every gap between neighbours must equal the
    median gap within 1 % of it or 0.01 mm, whichever is larger (a missing slice leaves a double
    gap). No slice may lie sideways of the stacking line by more than 10 % of the smallest pixel
    size (gantry tilt: the slices are not a rectangular grid). A single file (one slice, or a
    multi-frame object) is not checked here.

    Args:
        files: the series' files.

    Returns:
        The files sorted by position along the normal, ascending (the order ITK stacks them in).

    Raises:
        InputError: a tag is missing or unreadable, orientations or sizes differ, or positions are
            duplicated, missing or uneven.
    """
    if len(files) < 2:
        return list(files)
    positions, orientations, spacings, sizes = [], [], [], []
    for file in files:
        reader = _dicom_header(file)
        positions.append(_numbers(reader, DICOM_POSITION, 3, file, "ImagePositionPatient"))
        orientations.append(_numbers(reader, DICOM_ORIENTATION, 6, file, "ImageOrientationPatient"))
        spacings.append(_numbers(reader, DICOM_PIXEL_SPACING, 2, file, "PixelSpacing"))
        sizes.append(tuple(reader.GetSize()[:2]))
    names = [os.path.basename(f) for f in files]
    where = f"the DICOM series in {os.path.dirname(files[0]) or '.'}"
    first = orientations[0]
    odd = [n for n, o in zip(names, orientations, strict=True) if np.abs(o - first).max() > ORIENTATION_TOLERANCE]
    if odd:
        raise InputError(
            f"{where} mixes orientations: {len(odd)} of {len(files)} slices (e.g. {odd[0]}) are oriented "
            f"otherwise than {names[0]} ({' '.join(f'{v:g}' for v in first)})"
        )
    odd = [n for n, s in enumerate(spacings) if np.abs(s - spacings[0]).max() > 1e-4]
    if odd:
        shown = "x".join(f"{v:g}" for v in spacings[odd[0]]), "x".join(f"{v:g}" for v in spacings[0])
        raise InputError(
            f"{where} mixes pixel spacings: {names[odd[0]]} has {shown[0]} mm pixels, {names[0]} {shown[1]} mm"
        )
    odd = [n for n, s in enumerate(sizes) if s != sizes[0]]
    if odd:
        shown = "x".join(map(str, sizes[odd[0]])), "x".join(map(str, sizes[0]))
        raise InputError(f"{where} mixes slice sizes: {names[odd[0]]} is {shown[0]} pixels, {names[0]} {shown[1]}")
    row, column = first[:3], first[3:]
    normal = np.cross(row, column)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3:
        raise InputError(f"the DICOM slice {names[0]} has a degenerate ImageOrientationPatient {first.tolist()}")
    normal /= np.linalg.norm(normal)
    along = np.array([p @ normal for p in positions])
    order = np.argsort(along, kind="stable")
    along, ordered = along[order], [names[i] for i in order]
    gaps = np.diff(along)
    same = np.flatnonzero(gaps < DUPLICATE_MM)
    if same.size:
        a, b = ordered[same[0]], ordered[same[0] + 1]
        raise InputError(
            f"{where} has {same.size} duplicated slice position(s): {a} and {b} are both at "
            f"{along[same[0]]:.3f} mm along the slice normal"
        )
    median = float(np.median(gaps))
    tolerance = max(EVEN_FRACTION * median, EVEN_MM)
    uneven = np.flatnonzero(np.abs(gaps - median) > tolerance)
    if uneven.size:
        worst = int(uneven[np.argmax(np.abs(gaps[uneven] - median))])
        gap, a, b = float(gaps[worst]), ordered[worst], ordered[worst + 1]
        steps = round(gap / median)
        if steps >= 2 and abs(gap - steps * median) <= tolerance * steps:
            problem = f"{steps - 1} slice(s) missing between {a} and {b}"
        else:
            problem = f"uneven slice spacing between {a} and {b}"
        raise InputError(
            f"{where} has {problem}: a gap of {gap:.3f} mm where the median is {median:.3f} mm "
            f"({uneven.size} of {gaps.size} gaps differ by more than {tolerance:.3f} mm)"
        )
    stacked = np.array(positions)[order]
    sideways = stacked - stacked[0] - np.outer(along - along[0], normal)
    shift = float(np.linalg.norm(sideways, axis=1).max())
    if shift > max(SHEAR_FRACTION * float(spacings[0].min()), SHEAR_MM):
        raise InputError(
            f"the slices of {where} are shifted sideways by up to {shift:.2f} mm off the line the slice normal gives "
            "(gantry tilt?): they do not form a rectangular grid; resample the series first"
        )
    return [files[i] for i in order]


def _read_dicom_series(folder: Path, series: str | None = None) -> sitk.Image:
    found = dicom_series(folder)
    listing = "; ".join(s.label() for s in found)
    if series is not None:
        chosen = [s for s in found if s.uid == series.strip()]
        if not chosen:
            raise InputError(f"{folder} holds no DICOM series {series}; it holds {listing}")
    else:
        chosen = volume_series(found)  # a one-file series is not a choice to make
        if len(chosen) > 1:
            raise InputError(f"{folder} holds {len(chosen)} DICOM series; choose one with --series UID: {listing}")
    if len(chosen[0].files) < 2:
        raise InputError(f"the DICOM series {chosen[0].label()} of {folder} is one slice: a 3D volume is needed")
    files = check_dicom_slices(chosen[0].files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


# ---------------------------------------------------------------------------------------------------------------------
# Reading


def read_volume(path: str | os.PathLike, allow_constant: bool = False, series: str | None = None) -> Volume:
    """Read a 3D scalar volume, refusing damaged input.

    Args:
        path: an image file (NRRD, NIfTI, MHA/MHD) or a folder with a DICOM series.
        allow_constant: read a constant volume (an output map may be all zero: nothing segmented,
            nothing fragile).
        series: the SeriesInstanceUID to read from a DICOM folder holding several series (see
            :func:`dicom_series`); a folder with one series needs none.

    Returns:
        A :class:`Volume` with a float32 ``(k, j, i)`` array and the file's exact geometry.

    Raises:
        InputError: the path is missing or unreadable; a file is truncated or its compressed data
            corrupt (:func:`check_file_integrity`); a DICOM folder holds several series and none is
            chosen, or its slices do not form a regular grid (:func:`check_dicom_slices`); or the image
            is not a usable 3D scalar volume (2D, 4D, multi-component, empty, constant unless
            ``allow_constant``, NaN/Inf voxels, a voxel size outside (0, 20] mm).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if series is not None and not path.is_dir():
        raise InputError(f"a DICOM series ({series}) was chosen but {path} is a file, not a DICOM folder")
    try:
        if path.is_dir():
            image = _read_dicom_series(path, series)
        else:
            if path.stat().st_size == 0:
                raise InputError(f"input file is empty (0 bytes): {path}")
            check_file_integrity(path)
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:  # SimpleITK reports unreadable files as RuntimeError
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"cannot read {path} as a medical image ({first_line})") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
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
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and 0 < s <= MAX_SPACING_MM for s in spacing):
        raise InputError(
            f"{source} has an implausible voxel size {' x '.join(f'{s:g}' for s in spacing)} mm "
            f"(each must be above 0 and at most {MAX_SPACING_MM:g} mm): a broken header, or units other than mm"
        )
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


def check_usable_size(grid: Geometry, minimum_voxels: int | Sequence[int], model: str = "the model") -> None:
    """Refuse a volume too small for a network: fewer than ``minimum_voxels`` voxels of the network's grid.

    Below the network's own downsampling (a U-Net with strides 1, 2, 2, 2 halves its grid three
    times: 8 voxels) the deepest features see less than one cell of image, the rest padding, and the
    result is not a segmentation of the scan.

    Args:
        grid: the grid the network sees the volume on (its spacing, the volume's box).
        minimum_voxels: the fewest voxels the network needs along each axis of that grid, one number
            or three along its ``(i, j, k)``.
        model: the model's name, for the message.

    Raises:
        InputError: the volume is too small along some axis.
    """
    needed = np.broadcast_to(np.asarray(minimum_voxels, dtype=np.int64), (3,))
    voxels = np.asarray(grid.shape[::-1])  # (i, j, k)
    if (voxels >= needed).all():
        return
    extent = " x ".join(f"{e:.1f}" for e in grid.extent_mm)
    shape = " x ".join(str(int(n)) for n in voxels)
    least = " x ".join(f"{n * s:.3g}" for n, s in zip(needed, grid.spacing, strict=True))
    raise InputError(
        f"the input is too small for {model}: {extent} mm is {shape} voxels on its "
        f"{' x '.join(f'{s:.3g}' for s in grid.spacing)} mm grid, and it needs at least {least} mm "
        f"({' x '.join(str(int(n)) for n in needed)} voxels)"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Writing


def check_writable_suffix(path: Path) -> None:
    """Raise :class:`OutputError` unless ``path`` ends in a format :func:`write_volume` writes."""
    if suffix(path) not in WRITABLE_SUFFIXES:
        raise OutputError(f"cannot write {path}: use one of {', '.join(WRITABLE_SUFFIXES)}")


def write_volume(array: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool | None = None) -> Path:
    """Write a ``(k, j, i)`` array on ``geometry`` to NRRD / NIfTI / MHA, atomically.

    Args:
        array: voxel values; the dtype is kept (uint8 for label maps, float32 for maps).
        geometry: the grid; written exactly (spacing, origin, direction).
        path: target file; its suffix picks the format.
        compress: gzip the voxel data; by default only integer data (label maps shrink 100-fold or
            more, float maps by a fifth, at 7x the time: 7.0 s against 1.0 s for a 300 x 512 x 512
            float32 map).

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
            gzip = np.issubdtype(array.dtype, np.integer) if compress is None else compress
            sitk.WriteImage(image, str(tmp), useCompression=bool(gzip))
    except (RuntimeError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
        raise OutputError(f"cannot write {path}: {reason}") from None
    return path
