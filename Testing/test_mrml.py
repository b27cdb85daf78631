"""The module's scene logic against Slicer's real MRML (the ``slicer-core`` wheel): nodes, display, review.

The outputs come from a real ``predict --fragility`` run of the bundled model on the demo volume
placed on an oblique grid with anisotropic voxels, so every geometry check is non-trivial.
"""

import json

import numpy as np
import pytest

from SegUncertaintyLib import palette
from SegUncertaintyLib.errors import InputError
from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.io import read_volume, write_volume
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.resources import sample_path
from SegUncertaintyLib.volume import Geometry

from .helpers import rotation

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (dev extra) provides MRML")
vtk = pytest.importorskip("vtk")

from SegUncertaintyLib.mrml import display, headless, nodes, results, review, snapshot  # noqa: E402


@pytest.fixture(scope="module")
def oblique_run(tmp_path_factory):
    """The demo volume on an oblique anisotropic grid, and the outputs of predict --fragility on it."""
    folder = tmp_path_factory.mktemp("oblique-run")
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    direction = tuple(rotation([1.0, -0.4, 0.3], 17.0).ravel())
    geometry = Geometry(demo.geometry.shape, (0.7, 0.8, 1.25), (-30.0, 12.5, 77.0), direction)
    source = write_volume(demo.array, geometry, folder / "oblique.nrrd")
    predict_to_files(source, folder / "outputs", device="cpu", fragility=FragilityConfig(radii_mm=(1.0, 2.0)))
    return read_volume(source), folder / "outputs"


@pytest.fixture
def scene():
    return headless.new_scene()


def output(folder, name):
    return read_volume(folder / name).array


def test_volume_nodes_keep_the_exact_grid(scene, oblique_geometry, tmp_path):
    array = np.random.default_rng(0).normal(size=oblique_geometry.shape).astype(np.float32)
    node = nodes.add_volume(scene, array, oblique_geometry, "oblique")
    # MRML's own matrix places voxel (i, j, k) where our geometry says
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk = (3.0, 7.0, 11.0)
    mrml_ras = matrix.MultiplyPoint((*ijk, 1.0))[:3]
    np.testing.assert_allclose(mrml_ras, oblique_geometry.ijk_to_physical(np.array(ijk), frame="RAS"), atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), oblique_geometry.spacing, atol=1e-12)
    geometry = nodes.node_geometry(node)
    assert geometry.is_close(oblique_geometry, atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    # a node written for the command reads back voxel for voxel on the same grid
    written = read_volume(nodes.write_node(node, tmp_path / "node.nrrd"))
    assert written.geometry.is_close(oblique_geometry, atol=1e-6)
    np.testing.assert_array_equal(written.array, array)


def test_a_volume_under_a_transform_is_refused(scene, oblique_geometry):
    node = nodes.add_volume(scene, np.zeros(oblique_geometry.shape, np.float32), oblique_geometry, "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="harden"):
        nodes.node_volume(node)


def test_segments_round_trip_on_an_oblique_grid(scene, oblique_geometry):
    reference = nodes.add_volume(scene, np.zeros(oblique_geometry.shape, np.float32), oblique_geometry, "ref")
    labels = np.zeros(oblique_geometry.shape, np.uint8)
    labels[2:9, 5:15, 4:20] = 1
    labels[12:14, 20:22, 25:30] = 2
    labels[5, 6, 7] = 2  # a class inside another class's box
    segmentation, ids = nodes.add_segmentation(
        scene, labels, oblique_geometry, {1: "nodule", 2: "vessel", 3: "empty"}, reference, "seg"
    )
    names = [segmentation.GetSegmentation().GetSegment(ids[v]).GetName() for v in (1, 2, 3)]
    assert names == ["nodule", "vessel", "empty"]
    for value in (1, 2, 3):
        np.testing.assert_array_equal(nodes.segment_mask(segmentation, ids[value], reference), labels == value)
    np.testing.assert_array_equal(nodes.segmentation_labels(segmentation, ids, reference), labels)
    before = scene.GetNumberOfNodes()
    nodes.segment_mask(segmentation, ids[1], reference)
    assert scene.GetNumberOfNodes() == before  # no helper node is left behind


def test_results_become_nodes_on_the_input_grid(scene, oblique_run):
    volume, folder = oblique_run
    reference = nodes.add_volume(scene, volume.array, volume.geometry, "case")
    loaded = results.load_results(scene, folder, reference)

    segmentation = loaded.segmentation
    assert segmentation.GetSegmentation().GetSegment(loaded.segment_ids[1]).GetName() == "nodule"
    labels = output(folder, "segmentation.nrrd")
    np.testing.assert_array_equal(nodes.segment_mask(segmentation, loaded.segment_ids[1], reference), labels == 1)
    fragile = output(folder, "fragile.nrrd") > 0
    assert fragile.any()
    np.testing.assert_array_equal(nodes.segment_mask(segmentation, loaded.fragile_segment_id, reference), fragile)
    segment_display = segmentation.GetDisplayNode()
    assert segment_display.GetSegmentOpacity2DFill(loaded.fragile_segment_id) == 0.0
    assert segment_display.GetSegmentOpacity2DOutline(loaded.fragile_segment_id) == 1.0

    # the heatmap is the head's estimated probability of error, shown over the image
    assert loaded.heatmap_source == "error_probability"
    heatmap = slicer.util.arrayFromVolume(loaded.heatmap)
    np.testing.assert_allclose(heatmap, output(folder, "error_probability.nrrd"), atol=1e-7)
    assert nodes.node_geometry(loaded.heatmap).is_close(volume.geometry, atol=1e-9)
    heat_display = loaded.heatmap.GetDisplayNode()
    colours = scene.GetNodeByID(heat_display.GetColorNodeID())
    assert colours.GetName() == display.RISK_TABLE_NAME and colours.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    colours.GetColor(0, first)
    colours.GetColor(255, last)
    np.testing.assert_allclose(first[:3], palette.risk_colours(0.0), atol=1 / 255)  # the report's colours (8 bits)
    np.testing.assert_allclose(last[:3], palette.risk_colours(palette.RISK_MAX), atol=1 / 255)
    assert (heat_display.GetWindowLevelMin(), heat_display.GetWindowLevelMax()) == pytest.approx((0.0, 0.5))
    assert heat_display.GetApplyThreshold() == 1 and heat_display.GetLowerThreshold() == pytest.approx(0.1)
    for view in headless.SLICE_VIEWS:
        composite = scene.GetNodeByID(f"vtkMRMLSliceCompositeNode{view}")
        assert composite.GetBackgroundVolumeID() == reference.GetID()
        assert composite.GetForegroundVolumeID() == loaded.heatmap.GetID()

    probability = slicer.util.arrayFromVolume(loaded.probabilities["nodule"])
    np.testing.assert_allclose(probability, output(folder, "calibrated_probability_nodule.nrrd"), atol=1e-7)
    nodule = loaded.volumes[0]
    assert nodule.name == "nodule" and nodule.volume_interval_ml[0] <= nodule.volume_ml

    # the region table: one row per region of regions.json, worst first, with its RAS centre
    written = json.loads((folder / "regions.json").read_text())["regions"]
    table = loaded.region_table
    assert table.GetNumberOfRows() == len(written) == len(loaded.regions) > 0
    column = {name: i for i, name in enumerate(results.REGION_COLUMNS)}
    expected = [float(table.GetCellText(row, column["Expected wrong voxels"])) for row in range(len(written))]
    assert expected == sorted(expected, reverse=True)
    first_row = [table.GetCellText(0, column[c]) for c in ("Rank", "Status", "R", "A", "S")]
    assert first_row[:2] == ["1", "pending"]
    np.testing.assert_allclose([float(v) for v in first_row[2:]], written[0]["centroid_ras"], atol=0.06)
    # the worst region's centre is its voxels' centre of mass, in RAS on the oblique grid
    region_labels = output(folder, "regions.nrrd")
    assert region_labels.max() == len(written)
    voxels = np.argwhere(region_labels == 1)
    assert len(voxels) == written[0]["voxels"]
    centre = volume.geometry.ijk_to_physical(voxels.mean(axis=0)[::-1], frame="RAS")
    np.testing.assert_allclose(written[0]["centroid_ras"], centre, atol=1e-6)


def test_results_on_another_grid_are_refused(scene, oblique_run):
    volume, folder = oblique_run
    shifted = Geometry(volume.geometry.shape, volume.geometry.spacing, (0.0, 0.0, 0.0), volume.geometry.direction)
    other = nodes.add_volume(scene, volume.array, shifted, "another case")
    with pytest.raises(InputError, match="not on the grid"):
        results.load_results(scene, folder, other)
    with pytest.raises(InputError, match="no finished"):
        results.load_results(scene, folder.parent, other)


def test_without_a_head_the_heatmap_is_one_minus_the_top_probability(scene, tmp_path):
    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    predict_to_files(sample_path("lidc-nodule-demo.nrrd"), tmp_path, device="cpu", uncertainty="none")
    loaded = results.load_results(scene, tmp_path, nodes.add_volume(scene, demo.array, demo.geometry, "demo"))
    probability = output(tmp_path, "probability_nodule.nrrd")
    assert loaded.heatmap_source == "1 - max probability" and loaded.fragile_segment_id is None
    expected = 1.0 - np.maximum(probability, 1.0 - probability)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(loaded.heatmap), expected, atol=1e-6)
    assert list(loaded.probabilities) == ["nodule"]  # no calibrated probabilities without a head
    np.testing.assert_allclose(slicer.util.arrayFromVolume(loaded.probabilities["nodule"]), probability)


def test_jumping_centres_every_slice_view(scene):
    display.jump_to(scene, (12.5, -40.0, 101.25))
    for view in headless.SLICE_VIEWS:
        slice_to_ras = scene.GetNodeByID(f"vtkMRMLSliceNode{view}").GetSliceToRAS()
        assert [slice_to_ras.GetElement(r, 3) for r in range(3)] == pytest.approx([12.5, -40.0, 101.25])


def test_review_in_the_scene_keeps_every_action(scene, oblique_run, tmp_path):
    volume, folder = oblique_run
    reference = nodes.add_volume(scene, volume.array, volume.geometry, "case")
    loaded = results.load_results(scene, folder, reference)
    session = review.open_session(loaded, tmp_path / "review")
    first = loaded.regions[0]

    # Correct: the Segment Editor is masked to the region's edit area
    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    area_id = review.begin_correction(loaded, session, first.label, reference, editor, margin_mm=2.0)
    area = nodes.segment_mask(loaded.segmentation, area_id, reference)
    (k0, k1), (j0, j1), (i0, i1) = first.box_kji
    assert area[k0:k1, j0:j1, i0:i1].all() and not area.all()
    assert editor.GetMaskMode() == slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment
    assert editor.GetMaskSegmentID() == area_id
    assert editor.GetSelectedSegmentID() == loaded.segment_ids[1]
    assert editor.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteNone
    centre = scene.GetNodeByID("vtkMRMLSliceNodeRed").GetSliceToRAS()
    assert [centre.GetElement(r, 3) for r in range(3)] == pytest.approx(first.centroid_ras)

    # the reviewer paints 5 voxels of the edit area into the nodule, then saves
    nodule = nodes.segment_mask(loaded.segmentation, loaded.segment_ids[1], reference)
    painted = np.argwhere(area & ~nodule)[:5]
    edited = nodule.copy()
    edited[tuple(painted.T)] = True
    nodes.set_segment(loaded.segmentation, loaded.segment_ids[1], edited, volume.geometry)
    path = review.save_correction(loaded, session, first.label, reference, area_id, reviewer="dr-test")
    corrected = read_volume(path)
    assert corrected.geometry.is_close(volume.geometry, atol=1e-6)
    np.testing.assert_array_equal(corrected.array, edited.astype(np.uint8))
    assert loaded.segmentation.GetSegmentation().GetSegment(area_id) is None  # the edit area is gone
    assert session.log[-1]["voxels_changed"] == 5 and session.log[-1]["reviewer"] == "dr-test"
    assert loaded.region_table.GetCellText(0, results.REGION_COLUMNS.index("Status")) == "corrected"

    if len(loaded.regions) > 1:
        review.accept_region(loaded, session, loaded.regions[1].label)
    # reopened (after a restart) into a fresh scene, the table shows the saved statuses
    other_scene = headless.new_scene()
    other_reference = nodes.add_volume(other_scene, volume.array, volume.geometry, "case")
    again = results.load_results(other_scene, folder, other_reference)
    reopened = review.open_session(again, tmp_path / "review")
    assert reopened.status == session.status and reopened.version == 1
    assert again.region_table.GetCellText(0, results.REGION_COLUMNS.index("Status")) == "corrected"
    # giving up a correction removes the edit area and changes nothing on disk
    editor = other_scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    area_id = review.begin_correction(again, reopened, first.label, other_reference, editor)
    review.end_correction(again, area_id)
    assert again.segmentation.GetSegmentation().GetSegment(area_id) is None and reopened.version == 1


def test_the_review_view_renders_through_the_slice_pipeline(scene, oblique_run):
    volume, folder = oblique_run
    reference = nodes.add_volume(scene, volume.array, volume.geometry, "case")
    results.load_results(scene, folder, reference)  # the image and the heatmap in the views
    blue, magenta = (0.0, 0.4, 1.0), (1.0, 0.0, 1.0)
    nodule = output(folder, "segmentation.nrrd") == 1
    fragile = output(folder, "fragile.nrrd") > 0
    snapshot.add_outline_layer(scene, [nodule, fragile], [blue, magenta], volume.geometry, "outlines")
    centre = volume.geometry.ijk_to_physical(np.argwhere(nodule).mean(axis=0)[::-1], frame="RAS")
    picture = snapshot.render_slice(scene, "Red", centre, field_of_view_mm=40.0, size=200)
    assert picture.shape == (200, 200, 3) and picture.dtype == np.uint8
    pixels = picture.reshape(-1, 3).astype(int)
    is_blue = (pixels[:, 2] > 200) & (pixels[:, 0] < 40)
    is_magenta = (pixels[:, 0] > 200) & (pixels[:, 2] > 200) & (pixels[:, 1] < 40)
    assert is_blue.sum() > 50 and is_magenta.sum() > 0  # the contour and the fragile outline are drawn
    assert picture[100, 100].mean() > picture[5, 5].mean() + 40  # the nodule is brighter than the lung
    with pytest.raises(ValueError, match="has no Purple slice view"):
        snapshot.render_slice(scene, "Purple")
