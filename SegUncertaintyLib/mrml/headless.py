"""A scene outside the Slicer application (the ``slicer-core`` wheel): for tests and rendered figures.

Slicer's application, at start-up, registers the segmentation converters and the Segment Editor's
node class, creates the default colour tables and one slice view per layout view.
:func:`new_scene` does the same on a bare ``vtkMRMLScene``, so that the rest of this package runs
on it as in Slicer. Not used inside Slicer.
"""

from __future__ import annotations

from typing import Any

SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
_converters_registered = False


def register_converters() -> None:
    """Register the labelmap <-> closed surface conversion rules (once per process)."""
    global _converters_registered
    import slicer

    if _converters_registered:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    _converters_registered = True


def new_scene() -> Any:
    """A new MRML scene with colour tables and the Red, Yellow and Green slice views; also ``slicer.mrmlScene``."""
    import slicer

    register_converters()
    scene = slicer.vtkMRMLScene()
    scene.RegisterNodeClass(slicer.vtkMRMLSegmentEditorNode())  # Slicer's Segment Editor module does this
    colours = slicer.vtkMRMLColorLogic()
    colours.SetMRMLScene(scene)  # adds the built-in colour tables
    colours.SetMRMLScene(None)
    scene.AddDefaultNode(slicer.vtkMRMLSliceNode())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # on that default node: Axial, ...
    for view, orientation in SLICE_VIEWS.items():
        slice_node = scene.CreateNodeByClass("vtkMRMLSliceNode")
        slice_node.SetName(view)
        slice_node.SetLayoutName(view)
        slice_node.SetSingletonTag(view)
        slice_node.SetDefaultOrientation(orientation)
        slice_node.SetOrientation(orientation)
        scene.AddNode(slice_node)
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(view)
        composite.SetSingletonTag(view)
        scene.AddNode(composite)
    slicer.mrmlScene = scene
    return scene
