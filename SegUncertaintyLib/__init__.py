"""SegUncertainty: where is an AI segmentation likely wrong?

The library behind the ``seguncertainty`` command and the 3D Slicer module. Importing the package
is cheap and never imports torch, slicer, qt, ctk or vtk; import the submodules you need.
"""

__version__ = "0.1.0"
