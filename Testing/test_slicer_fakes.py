"""The strict fakes of Slicer's GUI are strict: what the real class lacks raises, what is real is told apart."""

import pytest

from .slicer_fakes import facts, parameter_node, widgets


def test_a_member_python_cannot_reach_raises_attribute_error():
    view = widgets.qMRMLTableView()
    with pytest.raises(AttributeError, match="qMRMLTableView has no member 'selectedMRMLTableRows'"):
        view.selectedMRMLTableRows()
    # a plain C++ method of a Slicer class: declared in the header, but not wrapped for Python
    assert "selectedMRMLTableColumnIndices" in facts.FACTS["qMRMLTableView"]["methods"]
    with pytest.raises(AttributeError):
        view.selectedMRMLTableColumnIndices()
    with pytest.raises(AttributeError, match="no property"):
        view.selectedRows = [0]  # a typo'd or invented property is not silently stored
    with pytest.raises(AttributeError, match="read-only"):
        widgets.QComboBox().count = 3


def test_a_real_member_that_is_not_faked_says_so():
    combo = widgets.QComboBox()
    assert facts.kind("QComboBox", "insertSeparator") == "method"
    with pytest.raises(NotImplementedError, match="exists"):
        combo.insertSeparator(0)
    assert facts.kind("qMRMLSegmentEditorWidget", "setActiveEffect") == "invokable"
    assert facts.kind("qMRMLSegmentEditorWidget", "installKeyboardShortcuts") == "slot"


def test_a_fake_cannot_invent_api():
    with pytest.raises(TypeError, match="which QPushButton does not have"):

        class Invented(widgets.QPushButton):
            def clickTwice(self):
                pass


def test_signals_follow_pythonqt():
    button = widgets.QPushButton()
    seen = []
    button.connect("clicked(bool)", lambda: seen.append("no arguments"))
    button.clicked.connect(lambda checked: seen.append(checked))
    button.click()
    assert seen == ["no arguments", False]
    with pytest.raises(AttributeError, match="no signal"):
        button.connect("doubleClicked()", print)
    button.enabled = False
    button.click()
    assert len(seen) == 2  # a disabled button does not click


def test_the_connector_rules_name_their_source():
    assert parameter_node.SOURCE.startswith("Slicer v5.10.0")
    assert [r.name for r in parameter_node.CONNECTORS][:2] == [
        "QCheckBoxToBoolConnector",
        "QCheckablePushButtonToBoolConnector",
    ]
    assert parameter_node.binding_problem("QLineEdit", str) is None
    assert "Unable to create GUI connector" in parameter_node.binding_problem("QLabel", float)
