"""The report's pictures: views by anatomy whatever the storage, radiological convention, windows, one palette."""

import io

import matplotlib.image
import numpy as np
import pytest

from SegUncertaintyLib import palette
from SegUncertaintyLib.axis_order import AxisOrder
from SegUncertaintyLib.reporting import figures
from SegUncertaintyLib.volume import Geometry

from .helpers import rotation

SHAPE = (20, 24, 28)  # (k, j, i): superior, posterior, left in the reference storage


def reference_scene():
    """A patient-axis scene with a bright block at the patient's left, anterior, superior; a segmented blob."""
    image = np.zeros(SHAPE, np.float32)
    image[14:18, 3:7, 20:25] = 100.0  # high k: superior; low j: anterior; high i: left
    labels = (image > 0).astype(np.uint8)
    risk = np.zeros(SHAPE, np.float32)
    risk[14:18, 3:7, 20:25] = 0.3
    geometry = Geometry(SHAPE, (0.8, 0.9, 1.5), (-10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return figures.Layers(image, labels, risk, labels > 0, geometry, (0.0, 100.0))


def stored(layers, permutation, flips):
    """The same voxels stored another way: array axes permuted and flipped, the geometry to match."""
    order = AxisOrder(permutation, flips)
    arrays = [order.to_network(a).copy() for a in (layers.image, layers.labels, layers.risk, layers.fragile)]
    return figures.Layers(*arrays, order.geometry(layers.geometry), layers.window)


def stored_centre(permutation, flips, centre):
    return tuple(SHAPE[a] - 1 - centre[a] if f else centre[a] for a, f in zip(permutation, flips, strict=True))


def pixels(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png))


@pytest.mark.parametrize(
    ("permutation", "flips"),
    [((1, 0, 2), (False, False, False)), ((2, 1, 0), (True, False, True)), ((0, 1, 2), (True, True, True))],
    ids=["coronal-stored", "permuted-and-reversed", "RAS-like"],
)
def test_the_views_do_not_depend_on_how_the_scan_is_stored(permutation, flips):
    reference = reference_scene()
    centre = (15, 5, 22)
    other = stored(reference, permutation, flips)
    other_centre = stored_centre(permutation, flips, centre)
    shown, at = other.in_patient_axes(other_centre)
    assert at == reference.in_patient_axes(centre)[1] == centre
    np.testing.assert_array_equal(shown.image, reference.image)
    assert shown.geometry.is_close(reference.geometry, atol=1e-9) and not shown.oblique
    # the rendered panels are the same pixels
    first = pixels(figures.slice_panel(reference, centre, ["background", "nodule"]))
    second = pixels(figures.slice_panel(other, other_centre, ["background", "nodule"]))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(
        pixels(figures.thumbnail(reference, centre)), pixels(figures.thumbnail(other, other_centre))
    )


def test_radiological_convention_as_in_slicer():
    """Axial from the feet (patient's left on the image's right, anterior up), coronal from the front,
    sagittal with anterior on the left: Slicer's Red, Green and Yellow slice-to-RAS matrices."""
    shown, centre = reference_scene().in_patient_axes((15, 5, 22))
    axial = figures._plane(shown.image, "axial", centre[0])  # rows top to bottom, columns left to right
    rows, columns = np.nonzero(axial)
    assert columns.min() > axial.shape[1] / 2  # the block is at the patient's left: the image's right
    assert rows.max() < axial.shape[0] / 2  # anterior: the upper half (axial rows run downwards)
    coronal = figures._plane(shown.image, "coronal", centre[1])  # drawn with row 0 at the bottom
    rows, columns = np.nonzero(coronal)
    assert rows.min() > coronal.shape[0] / 2 and columns.min() > coronal.shape[1] / 2  # superior up, left right
    sagittal = figures._plane(shown.image, "sagittal", centre[2])
    rows, columns = np.nonzero(sagittal)
    assert columns.max() < sagittal.shape[1] / 2  # anterior on the left
    assert figures.EDGE_LETTERS == {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}


def test_slice_positions_are_the_centres_ras_coordinates():
    layers = reference_scene()
    shown, centre = layers.in_patient_axes((15, 5, 22))
    r, a, s = layers.geometry.ijk_to_physical(np.array(centre[::-1], float), frame="RAS")
    assert figures.plane_position(shown, "axial", centre[0], centre) == f"S {s:.1f} mm"
    assert figures.plane_position(shown, "coronal", centre[1], centre) == f"A {a:.1f} mm"
    assert figures.plane_position(shown, "sagittal", centre[2], centre) == f"R {r:.1f} mm"


def test_an_oblique_scan_is_shown_on_its_nearest_axes_and_says_so():
    layers = reference_scene()
    tilted = Geometry(SHAPE, layers.geometry.spacing, layers.geometry.origin, tuple(rotation([0, 0, 1], 20).ravel()))
    shown, _ = figures.Layers(layers.image, layers.labels, layers.risk, None, tilted, (0, 100)).in_patient_axes(
        (1, 1, 1)
    )
    assert shown.oblique


def test_windows_by_modality():
    ct = np.linspace(-1000, 1000, 1000, dtype=np.float32)
    assert figures.display_window(ct, "CT", (-600, 1500)) == (-1350.0, 150.0)  # the card's lung window
    assert figures.display_window(ct, "CT") == (-160.0, 240.0)  # soft tissue without one
    head = np.zeros(1000, np.float32)
    head[700:] = np.linspace(100, 400, 300)  # air, then the head
    low, high = figures.display_window(head, "MR")
    assert 100 <= low < 110 and 395 < high <= 400  # the head's range, not the air's


def test_the_heatmap_is_blended_as_slicer_blends_it():
    grey = np.array([0.0, 1.0, 0.0, 1.0])
    risk = np.array([0.05, 0.05, 0.3, 0.3])
    shown = palette.blend_risk(grey, risk)
    np.testing.assert_array_equal(shown[:2], [[0, 0, 0], [1, 1, 1]])  # below the floor: the image alone
    colour = palette.risk_colours(0.3)
    np.testing.assert_allclose(shown[2], palette.RISK_OPACITY * colour)
    np.testing.assert_allclose(shown[3], palette.RISK_OPACITY * colour + (1 - palette.RISK_OPACITY))
