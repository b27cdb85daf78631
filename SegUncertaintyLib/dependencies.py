"""Installing the engine's Python packages into an application's Python without harming what it ships.

Slicer ships numpy, scipy, SimpleITK and VTK, and its PyTorch extension installs the torch build
that suits the GPU. A plain ``pip install monai`` may upgrade or downgrade any of them, or replace
that torch with a PyPI build. :func:`protective_constraints` pins each of them that is installed
to the installed version, so that pip either finds a set that fits them or fails, leaving them as
they are. Plain Python (no Slicer): the Slicer module calls it, and the tests run it.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

# Distributions the host application provides: never installed, upgraded or downgraded by us.
PROTECTED = ("numpy", "scipy", "SimpleITK", "torch", "torchvision", "vtk")


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def protective_constraints(protected: tuple[str, ...] = PROTECTED) -> list[str]:
    """pip constraints pinning each protected distribution that is installed, e.g. ``["numpy==1.26.4", ...]``."""
    pins = ((name, installed_version(name)) for name in protected)
    return [f"{name}=={version}" for name, version in pins if version]


def write_constraints(path: str | os.PathLike, protected: tuple[str, ...] = PROTECTED) -> Path:
    """Write :func:`protective_constraints` as a pip constraints file (``pip install -c PATH``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by SegUncertainty: keep what the application ships as it is",
        *protective_constraints(protected),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def is_installed(requirement: str) -> bool:
    """Whether ``name`` or ``name==version`` is installed (the forms of ``distribution_requirements``)."""
    name, _, version = requirement.partition("==")
    found = installed_version(name.strip())
    return found is not None and (not version or found == version.strip())
