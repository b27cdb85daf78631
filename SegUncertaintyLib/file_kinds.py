"""What kind of file a path is, told from its name and its first bytes (plain Python: no ITK, no torch).

Shared by :mod:`.io`, which reads the volumes, and :mod:`.preflight`, which refuses a wrong input
before a command imports anything heavy.
"""

from __future__ import annotations

from pathlib import Path

READABLE_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd", ".dcm")
WRITABLE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha")


def suffix(path: Path) -> str:
    """The lower-case suffix that names a volume format (``.nii.gz`` counts as one)."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128), whatever its name."""
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder: Path) -> bool:
    """True when a file directly in ``folder`` is DICOM: named ``*.dcm``, or a DICOM file by its preamble."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return False
    return any(e.suffix.lower() == ".dcm" or (e.is_file() and is_dicom_file(e)) for e in entries)
