"""Static checks of the Slicer extension: metadata, CMake lists, the .ui against the parameters and the code.

The module file imports Slicer's Qt application, which cannot run here, so it is read as source
(``ast``); its logic lives in SegUncertaintyLib.mrml and is tested against real MRML (test_mrml.py).
"""

import ast
import hashlib
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from SegUncertaintyLib.model.package import distribution_requirements, load_package

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SegUncertainty"
SOURCE = (MODULE / "SegUncertainty.py").read_text()
TREE = ast.parse(SOURCE, feature_version=(3, 12))  # Slicer >= 5.10 runs Python 3.12
UI = ElementTree.parse(MODULE / "Resources" / "UI" / "SegUncertainty.ui").getroot()


def cmake_set(text: str, name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", text, flags=re.DOTALL)
    assert match, f"{name} is not set"
    return match.group(1).split()


def module_constant(name: str):
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no constant {name}")


def widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in UI.iter("widget")}


def test_the_extension_metadata_is_complete():
    text = (ROOT / "CMakeLists.txt").read_text()
    for name in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        value = " ".join(cmake_set(text, f"EXTENSION_{name}")).strip('"')
        assert value and value != "NA", name
    assert cmake_set(text, "EXTENSION_DEPENDS") == ['"PyTorch"']
    for variable in ("EXTENSION_README_FILE", "EXTENSION_LICENSE_FILE"):
        file_name = cmake_set(text, variable)[0].replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")
        assert (ROOT / file_name).is_file()
    # the icon and the screenshots the URLs point to are in the repository
    for url in [*cmake_set(text, "EXTENSION_ICONURL"), *cmake_set(text, "EXTENSION_SCREENSHOTURLS")]:
        assert (ROOT / url.strip('"').split("/main/", 1)[1]).is_file(), url
    assert re.search(r"add_subdirectory\(SegUncertaintyLib\)\s+add_subdirectory\(SegUncertainty\)", text)


def test_every_module_file_is_listed_for_the_slicer_build():
    text = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "SegUncertainty")
    listed = set(cmake_set(text, "MODULE_PYTHON_SCRIPTS") + cmake_set(text, "MODULE_PYTHON_RESOURCES"))
    present = {
        p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*") if p.is_file() and p.name != "CMakeLists.txt"
    }
    present = {p for p in present if "__pycache__" not in p}
    assert listed == present
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT SegUncertainty.py)" in text


def test_every_parameter_name_in_the_ui_is_a_parameter():
    wrapper = next(n for n in TREE.body if isinstance(n, ast.ClassDef) and n.name == "SegUncertaintyParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in wrapper.decorator_list)
    parameters = {s.target.id for s in wrapper.body if isinstance(s, ast.AnnAssign)}
    bound = {}
    for widget in UI.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert set(bound) <= parameters, f"unknown parameters in the .ui: {set(bound) - parameters}"
    # everything the user sets is in the panel; the model (a free value: a name or a folder) is shown
    # and set by the widget itself, which test_slicer_widget drives
    assert set(bound) == parameters - {"model"}
    assert "self.ui.modelComboBox" in SOURCE and "modelComboBox" in widgets()
    assert bound["inputVolume"] == "qMRMLNodeComboBox" and bound["fragility"] == "QCheckBox"


def test_combo_box_choices_match_the_parameters_and_the_command():
    from SegUncertaintyLib.methods import PREDICT_CHOICES

    items = {
        name: [i.find("property/string").text for i in widget.findall("item")]
        for name, widget in widgets().items()
        if widget.get("class") == "QComboBox"
    }
    assert items["uncertaintyComboBox"] == [name for name in PREDICT_CHOICES if name != "none"]
    assert items["deviceComboBox"] == module_constant("DEVICE_CHOICES") == ["auto", "cpu", "cuda"]


def test_every_widget_the_module_uses_is_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", SOURCE))
    assert used <= set(widgets()), f"missing in the .ui: {used - set(widgets())}"
    # each MRML widget receives the scene
    receivers = {
        c.findtext("receiver") for c in UI.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml_widgets = {n for n, w in widgets().items() if w.get("class", "").startswith("qMRML") and n != "SegUncertainty"}
    assert mrml_widgets == receivers


def test_the_module_classes_and_the_self_test_exist():
    classes = {n.name: n for n in TREE.body if isinstance(n, ast.ClassDef)}
    for name in ("SegUncertainty", "SegUncertaintyWidget", "SegUncertaintyLogic", "SegUncertaintyTest"):
        assert name in classes
    tests = {n.name for n in classes["SegUncertaintyTest"].body if isinstance(n, ast.FunctionDef)}
    assert {"runTest", "test_sample_data", "test_segment_and_review"} <= tests
    # the module only drives the library: no torch, no inference in the GUI process
    imported = {a.name.split(".")[0] for n in ast.walk(TREE) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(TREE) if isinstance(n, ast.ImportFrom) and n.module}
    assert "torch" not in imported and "SegUncertaintyLib" in imported


def test_the_sample_data_is_registered_with_the_right_checksum():
    from SegUncertaintyLib.resources import sample_path

    for prefix in ("SAMPLE", "HEAD_SAMPLE"):
        digest = hashlib.sha256(sample_path(module_constant(f"{prefix}_FILE")).read_bytes()).hexdigest()
        assert digest == module_constant(f"{prefix}_SHA256")
    assert (MODULE / "Resources" / "Icons" / f"{module_constant('SAMPLE_NAME')}.png").is_file()
    assert "registerCustomSampleDataSource" in SOURCE and 'connect("startupCompleted()", registerSampleData)' in SOURCE


def test_the_requirements_match_the_library():
    import tomllib

    def names(requirements):
        return {re.split(r"[<>=!~ \[]", r.strip())[0].lower() for r in requirements if r.strip()}

    lines = [
        line
        for line in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()
        if not line.startswith("#")
    ]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    weights = {
        requirement
        for card in sorted((ROOT / "Resources" / "models").glob("*/model.json"))
        for requirement in distribution_requirements(load_package(card.parent).card)
    }
    # torch comes from the PyTorch extension (the build that suits the machine's GPU); a weights
    # package is installed with --no-deps only for a model that reads from it (ensureDependencies);
    # the module draws no report, so it does not need matplotlib
    assert weights and names(lines) == names(dependencies) - {"torch", "matplotlib"} - names(weights)
