"""Small helpers shared by the tests."""

import numpy as np

from SegUncertaintyLib.volume import Geometry


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix about ``axis``."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def predict_args(source, out, *extra, progress: str = "json") -> list[str]:
    """Arguments of ``seguncertainty predict`` on the CPU."""
    return [
        "predict",
        "--input",
        str(source),
        "--output-dir",
        str(out),
        "--device",
        "cpu",
        "--progress",
        progress,
        *extra,
    ]


def run_quietly(*args: str) -> int:
    """Run the CLI on the CPU without progress output; returns the exit status."""
    from SegUncertaintyLib.cli import main

    return main([*args, "--device", "cpu", "--progress", "none"])


def oblique_grid() -> Geometry:
    """Anisotropic, non-axis-aligned grid with an off-centre origin (the ``oblique_geometry`` fixture)."""
    return Geometry(
        shape=(20, 28, 32),
        spacing=(0.8, 0.65, 2.5),
        origin=(-120.5, 33.25, -410.0),
        direction=tuple(rotation([1.0, 2.0, 0.5], 23.0).ravel()),
    )


def package_with_section(package, folder, section: str, change) -> None:
    """Copy ``package``'s folder to ``folder`` with ``change`` applied to its card's ``section`` (a dict)."""
    import json
    import shutil

    shutil.copytree(package.path, folder)
    card = json.loads((folder / "model.json").read_text())
    change(card[section])
    (folder / "model.json").write_text(json.dumps(card))
