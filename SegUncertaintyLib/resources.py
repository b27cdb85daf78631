"""Where the bundled model packages and sample volumes are.

In a source checkout (and an editable install) they are in the top-level ``Resources/`` folder; an
installed wheel carries the same folder as ``SegUncertaintyLib/Resources``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError

_HERE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The folder holding ``models/`` and ``samples/``."""
    for candidate in (_HERE / "Resources", _HERE.parent / "Resources"):
        if (candidate / "models").is_dir():
            return candidate
    raise DataError(f"bundled resources not found next to {_HERE}; reinstall SegUncertainty")


def bundled_models() -> dict[str, Path]:
    """Bundled model packages by name."""
    root = resources_dir() / "models"
    return {p.name: p for p in sorted(root.iterdir()) if (p / "model.json").is_file()}


def sample_path(name: str) -> Path:
    """Path of a bundled sample volume, e.g. ``"lidc-nodule-demo.nrrd"``."""
    path = resources_dir() / "samples" / name
    if not path.is_file():
        raise DataError(f"bundled sample {name!r} not found in {path.parent}")
    return path
