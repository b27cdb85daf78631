"""Test volumes of growing size for the cost benchmarks: the demo scene, mirror-tiled.

``demo`` is the bundled sample (100 x 100 x 56 at 0.7 x 0.7 x 1.25 mm); ``128`` and ``256`` are
cubes at 1 mm; ``ct`` is 512 x 512 x 300 at 0.7 x 0.7 x 1.25 mm. Tiling by mirroring keeps
realistic lung texture, vessels and nodules without seams.
"""

from __future__ import annotations

from pathlib import Path

import common  # noqa: F401  (first: puts the repository on the import path)
import numpy as np

from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry, Volume

SIZES = {
    "demo": None,
    "128": ((128, 128, 128), (1.0, 1.0, 1.0)),
    "256": ((256, 256, 256), (1.0, 1.0, 1.0)),
    "ct": ((300, 512, 512), (0.7, 0.7, 1.25)),
}


def make_volume(name: str) -> Volume:
    """The named test volume (see module docstring)."""
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    if SIZES[name] is None:
        return demo
    shape, spacing = SIZES[name]
    tiled = demo.array
    for axis, size in enumerate(shape):
        reps = int(np.ceil(size / tiled.shape[axis]))
        tiled = np.concatenate([tiled if i % 2 == 0 else np.flip(tiled, axis) for i in range(reps)], axis=axis)
    array = np.ascontiguousarray(tiled[: shape[0], : shape[1], : shape[2]])
    return Volume(array, Geometry(shape, spacing, demo.geometry.origin, demo.geometry.direction))


def write_input(name: str, folder: Path) -> Path:
    """The named test volume as an NRRD file in ``folder`` (the bundled file itself for ``demo``)."""
    if SIZES[name] is None:
        return sample_path("lidc-nodule-demo.nrrd")
    volume = make_volume(name)
    return write_volume(volume.array.astype(np.int16), volume.geometry, folder / f"{name}.nrrd")
