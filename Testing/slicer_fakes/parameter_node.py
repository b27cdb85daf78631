"""A strict stand-in for ``slicer.parameterNodeWrapper``, with Slicer's GUI-connector rules as data.

Facts from Slicer's ``Base/Python/slicer/parameterNodeWrapper/`` (``guiConnectors.py``,
``wrapper.py``, ``serializers.py``, ``validators.py``), identical from tag v5.10.0 to v5.12.3 and
main (583e9b3):

- ``connectGui(gui)`` collects every widget whose dynamic property ``SlicerParameterName`` is set
  (``gui.findChildren(QWidget)`` for a widget, else the values of ``gui.__dict__``) and builds all
  their connectors in one dict comprehension before binding any: one connector that raises leaves
  no widget bound. Then each connector writes the parameter's value to its widget and starts
  listening; a ModifiedEvent observer on the node writes every value back (it is never removed).
- ``createGuiConnector`` takes the first rule in registration order (:data:`CONNECTORS`) whose
  widget class is exactly the widget's (``type(widget) in (...)``) and whose unannotated type
  matches, then applies that connector's requirements; no rule: ``RuntimeError``.
- Values are validated on write (``ValueError`` outside ``Choice``/``WithinRange``) and stored in
  the scripted module node: ``str(value)``, ``"True"``/``"False"``, node references.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import types
import typing
from collections.abc import Callable
from typing import Any

import vtk

SOURCE = "Slicer v5.10.0..main Base/Python/slicer/parameterNodeWrapper/guiConnectors.py"
PARAMETER_NAME_PROPERTY = "SlicerParameterName"


# Validators (validators.py)


@dataclasses.dataclass(frozen=True)
class Choice:
    choices: Any

    def validate(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


@dataclasses.dataclass(frozen=True)
class WithinRange:
    minimum: float
    maximum: float

    def validate(self, value: Any) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


@dataclasses.dataclass(frozen=True)
class Minimum:
    minimum: float

    def validate(self, value: Any) -> None:
        if value < self.minimum:
            raise ValueError(f"Value must be greater than {self.minimum}, is {value}")


@dataclasses.dataclass(frozen=True)
class Maximum:
    maximum: float

    def validate(self, value: Any) -> None:
        if value > self.maximum:
            raise ValueError(f"Value must be less than {self.maximum}, is {value}")


@dataclasses.dataclass(frozen=True)
class RangeBounds:
    minimum: float
    maximum: float


def split_annotations(datatype: Any) -> tuple[Any, list[Any]]:
    """``Annotated[T, a, b]`` -> ``(T, [a, b])``."""
    if typing.get_origin(datatype) is typing.Annotated:
        base, *annotations = typing.get_args(datatype)
        return base, annotations
    return datatype, []


def _union_options(datatype: Any) -> tuple[Any, ...]:
    """The members of ``Union[...]``/``X | Y`` (createGuiConnector turns the latter into the former), else itself."""
    unions = (typing.Union, types.UnionType)
    return typing.get_args(datatype) if typing.get_origin(datatype) in unions else (datatype,)


def is_node_type(datatype: Any) -> bool:
    """A vtkMRMLNode subclass, or a Union/Optional of them (util.isNodeOrUnionOfNodes)."""
    import slicer

    options = [o for o in _union_options(datatype) if o is not type(None)]
    return bool(options) and all(isinstance(o, type) and issubclass(o, slicer.vtkMRMLNode) for o in options)


# The connector rules, in registration order (guiConnectors.py)

PATHS = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath)


@dataclasses.dataclass(frozen=True)
class ConnectorRule:
    """One GUI connector: the exact widget classes and value types it takes, and what it requires.

    ``requires``: an annotation class the parameter must carry (else ``create`` raises);
    ``bounded_widgets``: widget classes for which the type must be bounded (WithinRange, or
    Minimum and Maximum) (else ``__init__`` raises).
    """

    name: str
    widgets: tuple[str, ...]
    accepts: Callable[[Any], bool]
    requires: type | None = None
    bounded_widgets: tuple[str, ...] = ()

    def problem(self, widget_class: str, datatype: Any) -> str | None:
        """Why binding fails with this connector (None: it binds)."""
        _, annotations = split_annotations(datatype)
        if self.requires is not None and not any(isinstance(a, self.requires) for a in annotations):
            return f"{self.name} requires the {self.requires.__name__} annotation to be used."
        if widget_class in self.bounded_widgets:
            kinds = {type(a) for a in annotations}
            if WithinRange not in kinds and not {Minimum, Maximum} <= kinds:
                return f"Cannot have a connection to {widget_class} where the type is unbounded."
        return None


def _base_in(*types: Any) -> Callable[[Any], bool]:
    return lambda datatype: split_annotations(datatype)[0] in types


CONNECTORS = (
    ConnectorRule("QCheckBoxToBoolConnector", ("QCheckBox", "ctkCheckBox"), _base_in(bool)),
    ConnectorRule("QCheckablePushButtonToBoolConnector", ("QPushButton",), _base_in(bool)),
    ConnectorRule("ctkCheckablePushButtonToBoolConnector", ("ctkCheckablePushButton",), _base_in(bool)),
    ConnectorRule(
        "QSliderOrSpinBoxToIntConnector", ("QSlider", "QSpinBox"), _base_in(int), bounded_widgets=("QSlider",)
    ),
    ConnectorRule(
        "QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector",
        (
            "QDoubleSpinBox",
            "ctkSliderWidget",
            "qMRMLSliderWidget",
            "ctkDoubleSlider",
            "ctkDoubleSpinBox",
            "qMRMLSpinBox",
        ),
        _base_in(float, int),
        bounded_widgets=("ctkSliderWidget", "qMRMLSliderWidget"),
    ),
    ConnectorRule(
        "ComboBoxToStringableConnector", ("QComboBox", "ctkComboBox"), _base_in(int, float, str, bool), requires=Choice
    ),
    ConnectorRule(
        "QComboBoxToEnumConnector",
        ("QComboBox", "ctkComboBox"),
        lambda t: isinstance(split_annotations(t)[0], type) and issubclass(split_annotations(t)[0], enum.Enum),
    ),
    ConnectorRule("QLineEditToStrConnector", ("QLineEdit",), _base_in(str)),
    ConnectorRule("QLabelToStrConnector", ("QLabel",), _base_in(str)),
    ConnectorRule("QTextEditPlainTextToStrConnector", ("QTextEdit",), _base_in(str)),
    ConnectorRule(
        "ctkRangeWidgetToRangeConnector",
        ("ctkRangeWidget", "ctkDoubleRangeSlider", "qMRMLRangeWidget"),
        lambda t: getattr(split_annotations(t)[0], "__name__", "") == "FloatRange",
        requires=RangeBounds,
    ),
    ConnectorRule("ctkPathLineEditToPathConnector", ("ctkPathLineEdit",), _base_in(*PATHS)),
    ConnectorRule("ctkDirectoryButtonToPathConnector", ("ctkDirectoryButton",), _base_in(*PATHS)),
    ConnectorRule("qMRMLNodeComboBoxToNodeConnector", ("qMRMLNodeComboBox",), lambda t: is_node_type(t)),
    ConnectorRule(
        "ctkColorPickerButtonToQColorConnector",
        ("ctkColorPickerButton",),
        lambda t: getattr(split_annotations(t)[0], "__name__", "") == "QColor",
    ),
)


def binding_problem(widget_class: str, datatype: Any) -> str | None:
    """Why Slicer cannot bind a widget of this class to a parameter of this type (None: it can)."""
    for rule in CONNECTORS:
        if widget_class in rule.widgets and rule.accepts(datatype):
            return rule.problem(widget_class, datatype)
    return f"Unable to create GUI connector from datatype '{datatype}' to widget type '{widget_class}'."


# Connectors with behaviour (the ones the module's panel uses)


class Connector:
    def __init__(self, widget: Any, datatype: Any, signal: str):
        self.widget, self.datatype, self.signal = widget, datatype, signal
        self.callback: Callable[[], None] | None = None

    def changed(self) -> None:
        if self.callback is not None:
            self.callback()

    def on_changed(self, callback: Callable[[], None] | None) -> None:
        if callback is None:
            getattr(self.widget, self.signal).disconnect(self.changed)
        else:
            getattr(self.widget, self.signal).connect(self.changed)
        self.callback = callback


class CheckBoxConnector(Connector):
    def __init__(self, widget: Any, datatype: Any):
        super().__init__(widget, datatype, "stateChanged")

    def read(self) -> bool:
        return self.widget.checked

    def write(self, value: bool) -> None:
        self.widget.checked = value


class SliderConnector(Connector):
    def __init__(self, widget: Any, datatype: Any):
        super().__init__(widget, datatype, "valueChanged")
        bounds = next(a for a in split_annotations(datatype)[1] if isinstance(a, WithinRange))
        widget.minimum, widget.maximum = bounds.minimum, bounds.maximum

    def read(self) -> float:
        return self.widget.value

    def write(self, value: float) -> None:
        self.widget.value = value


class ChoiceComboBoxConnector(Connector):
    """Clears the combo box and lists the choices; listens to ``currentIndexChanged`` only."""

    def __init__(self, widget: Any, datatype: Any):
        super().__init__(widget, datatype, "currentIndexChanged")
        self.choices = next(a for a in split_annotations(datatype)[1] if isinstance(a, Choice)).choices
        widget.clear()
        for choice in self.choices:
            widget.addItem(str(choice))

    def read(self) -> Any:
        return self.choices[self.widget.currentIndex]

    def write(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"Unable to find value {value} in choices {self.choices}")
        self.widget.currentIndex = list(self.choices).index(value)


class NodeComboBoxConnector(Connector):
    def __init__(self, widget: Any, datatype: Any):
        super().__init__(widget, datatype, "currentNodeChanged")
        widget.nodeTypes = [o.__name__ for o in _union_options(datatype) if o is not type(None)]

    def read(self) -> Any:
        return self.widget.currentNode()

    def write(self, value: Any) -> None:
        self.widget.setCurrentNode(value)


BEHAVIOUR = {
    "QCheckBoxToBoolConnector": CheckBoxConnector,
    "QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector": SliderConnector,
    "ComboBoxToStringableConnector": ChoiceComboBoxConnector,
    "qMRMLNodeComboBoxToNodeConnector": NodeComboBoxConnector,
}


def create_connector(widget: Any, datatype: Any) -> Connector:
    for rule in CONNECTORS:
        if widget.REAL in rule.widgets and rule.accepts(datatype):
            problem = rule.problem(widget.REAL, datatype)
            if problem is not None:
                raise RuntimeError(problem)
            if rule.name not in BEHAVIOUR:
                raise NotImplementedError(f"{rule.name} is not faked")
            return BEHAVIOUR[rule.name](widget, datatype)
    raise RuntimeError(binding_problem(widget.REAL, datatype))


# The wrapper


@dataclasses.dataclass
class Parameter:
    name: str
    datatype: Any
    default: Any

    @property
    def base(self) -> Any:
        return split_annotations(self.datatype)[0]

    def validate(self, value: Any) -> None:
        for annotation in split_annotations(self.datatype)[1]:
            if hasattr(annotation, "validate"):
                annotation.validate(value)

    def write(self, node: Any, value: Any) -> None:
        self.validate(value)
        if is_node_type(self.base):
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        elif self.base is bool:
            node.SetParameter(self.name, "True" if value else "False")
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node: Any) -> Any:
        if is_node_type(self.base):
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        return text == "True" if self.base is bool else self.base(text)


def parameterNodeWrapper(cls: type) -> type:
    hints = typing.get_type_hints(cls, include_extras=True)
    parameters = {}
    for name, datatype in hints.items():
        base = split_annotations(datatype)[0]
        default = cls.__dict__.get(name, None if is_node_type(base) else base())
        parameters[name] = Parameter(name, datatype, default)

    def __init__(self: Any, parameterNode: Any) -> None:
        self.parameterNode = parameterNode
        self._guis: dict[int, dict[str, Connector]] = {}
        self._next_tag = 0
        self._updating_gui = False
        for parameter in parameters.values():
            if not parameterNode.HasParameter(parameter.name):
                parameter.write(parameterNode, parameter.default)

    def connectGui(self: Any, gui: Any) -> int:
        if getattr(gui, "isWidgetType", lambda: False)():  # wrapper.py _isWidget
            widgets = gui.findChildren(_qt_widget_class())
        else:
            widgets = list(vars(gui).values())
        mapping = {w.property(PARAMETER_NAME_PROPERTY): w for w in widgets if w.property(PARAMETER_NAME_PROPERTY)}
        for name in mapping:
            if name not in parameters:
                raise ValueError(f"Cannot find a param with the given name: {name}")
        connectors = {name: create_connector(w, parameters[name].datatype) for name, w in mapping.items()}
        tag = self._next_tag
        self._next_tag += 1
        self._guis[tag] = connectors
        for name, connector in connectors.items():
            connector.write(getattr(self, name))
            connector.on_changed(_gui_to_parameter(self, name, connector))
        self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: _update_gui(self))
        return tag

    def disconnectGui(self: Any, tag: int) -> None:
        for connector in self._guis.pop(tag, {}).values():
            connector.on_changed(None)

    members: dict[str, Any] = {
        "__init__": __init__,
        "__doc__": cls.__doc__,
        "allParameters": parameters,
        "connectGui": connectGui,
        "disconnectGui": disconnectGui,
        "StartModify": lambda self: self.parameterNode.StartModify(),
        "EndModify": lambda self, was: self.parameterNode.EndModify(was),
        "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
            event, callback, priority
        ),
        "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
        "Modified": lambda self: self.parameterNode.Modified(),
        "getValue": lambda self, name: getattr(self, name),
        "setValue": lambda self, name, value: setattr(self, name, value),
    }
    for name, parameter in parameters.items():
        members[name] = property(
            lambda self, p=parameter: p.read(self.parameterNode),
            lambda self, value, p=parameter: _write(self, p, value),
        )
    return type(cls.__name__, (), members)


def _write(wrapper: Any, parameter: Parameter, value: Any) -> None:
    node = wrapper.parameterNode
    was = node.StartModify()
    try:
        parameter.write(node, value)
    finally:
        node.EndModify(was)


def _gui_to_parameter(wrapper: Any, name: str, connector: Connector) -> Callable[[], None]:
    def callback() -> None:
        if not wrapper._updating_gui:
            setattr(wrapper, name, connector.read())

    return callback


def _update_gui(wrapper: Any) -> None:
    if wrapper._updating_gui:
        return
    wrapper._updating_gui = True
    try:
        for connectors in wrapper._guis.values():
            for name, connector in connectors.items():
                connector.write(getattr(wrapper, name))
    finally:
        wrapper._updating_gui = False


def _qt_widget_class() -> type:
    from .widgets import QWidget

    return QWidget
