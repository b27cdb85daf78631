"""The bridge between the engine's arrays and files and Slicer's MRML scene.

The only part of SegUncertaintyLib that talks to Slicer. ``slicer`` and ``vtk`` are imported inside
the functions, never when this package is imported, so the rest of the library runs without them.
Everything here works on a scene passed in and uses only MRML classes and ``slicer.util`` array
helpers, so it runs the same in Slicer and on the Qt-free ``slicer-core`` wheel, where the tests
exercise it:

* :mod:`.nodes`: volume and segmentation nodes <-> ``(k, j, i)`` arrays on a :class:`Geometry`;
* :mod:`.display`: the risk colour map, the heatmap layer, outlines, slice jumps;
* :mod:`.results`: the files of ``seguncertainty predict`` -> nodes, and the region table.
"""
