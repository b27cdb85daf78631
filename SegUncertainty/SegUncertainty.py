"""SegUncertainty Slicer module (placeholder).

The module's real interface (run, heatmap, fragile voxels, region review) is built on the
SegUncertaintyLib engine, which is usable today from the command line: ``seguncertainty predict``.
This placeholder registers the module, makes SegUncertaintyLib importable from a source checkout,
and checks in its self-test that the engine imports inside Slicer's Python.
"""

import os
import sys

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

# In a source checkout (repository folder added to Slicer's module paths) SegUncertaintyLib is a
# sibling of this module's folder rather than installed next to the module file.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_REPO, "SegUncertaintyLib")) and _REPO not in sys.path:
    sys.path.append(_REPO)


class SegUncertainty(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegUncertainty"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SegUncertainty developers"]
        self.parent.helpText = (
            "Segments a volume with a local PyTorch model and shows where the segmentation is likely wrong. "
            "This version of the module is a placeholder; use the command line "
            "<code>seguncertainty predict</code> meanwhile."
        )
        self.parent.acknowledgementText = (
            "Built on MONAI, SimpleITK and PyTorch. The bundled nodule model was trained on LIDC-IDRI "
            "radiologist outlines (CC BY 3.0, The Cancer Imaging Archive) with synthetic CT intensities."
        )


class SegUncertaintyWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        label = qt.QLabel(
            "The interactive review is not available in this version.\n"
            "Run 'seguncertainty predict --input VOLUME --output-dir OUT' and load the outputs."
        )
        label.wordWrap = True
        self.layout.addWidget(label)
        self.layout.addStretch(1)


class SegUncertaintyLogic(ScriptedLoadableModuleLogic):
    def engineVersion(self):
        """Version of the SegUncertaintyLib engine this module runs."""
        import SegUncertaintyLib

        return SegUncertaintyLib.__version__


class SegUncertaintyTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_engine_imports()

    def test_engine_imports(self):
        self.delayDisplay("Checking that the engine imports")
        self.assertTrue(SegUncertaintyLogic().engineVersion())
        self.delayDisplay("Test passed")
