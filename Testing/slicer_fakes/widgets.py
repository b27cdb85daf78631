"""Strict fakes of the Qt, CTK and Slicer widgets the module uses, built from :mod:`.facts`.

A fake has exactly the members Python can reach on the real class (``api_facts.json``: Qt 5.15.8,
CTK and Slicer v5.10.0 headers). A member the real class does not have raises ``AttributeError``;
a real member the fake does not implement raises ``NotImplementedError``, so a test never passes
because a fake said yes to anything. Q_PROPERTYs are attributes (as PythonQt makes them); writing a
read-only or unknown attribute raises. Signals are connected with PythonQt's
``obj.connect("clicked(bool)", slot)`` or ``obj.clicked.connect(slot)`` and call their slots in
connection order, each with as many arguments as it takes (as PythonQt does).

Behaviour is faked only where the module depends on it, following the real classes' source (the
functions are named; the facts in their docstrings say where they come from).
"""

from __future__ import annotations

import inspect
import logging
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, ClassVar

from . import facts

log = logging.getLogger(__name__)


def _arity(slot: Any) -> int | None:
    """How many positional arguments a slot takes (None: any number)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class Signal:
    """One signal of one object: slots are called in connection order."""

    def __init__(self, owner: StrictQObject, name: str):
        self.owner, self.name, self.slots = owner, name, []

    def connect(self, slot: Any) -> bool:
        self.slots.append(slot)
        return True

    def disconnect(self, slot: Any = None) -> bool:
        if slot is None:
            self.slots.clear()
            return True
        if slot not in self.slots:
            raise RuntimeError(f"{self.owner._describe()}.{self.name}: disconnect of a slot never connected")
        self.slots.remove(slot)
        return True

    def emit(self, *args: Any) -> None:
        if self.owner._blocked:
            return
        for slot in list(self.slots):
            count = _arity(slot)
            slot(*(args if count is None else args[:count]))


class StrictQObject:
    """Base of the fakes: members from the facts of ``REAL``, nothing else."""

    REAL: ClassVar[str] = "QObject"
    DEFAULTS: ClassVar[dict[str, Any]] = {"objectName": ""}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        allowed = facts.members(cls.REAL) | facts.PYTHONQT_MEMBERS
        invented = [n for n in vars(cls) if not n.startswith("_") and n.isidentifier() and n not in allowed]
        invented = [n for n in invented if n not in ("REAL", "DEFAULTS")]
        if invented:
            raise TypeError(f"fake {cls.__name__} defines {invented}, which {cls.REAL} does not have")

    def __init__(self, parent: StrictQObject | None = None):
        object.__setattr__(self, "_properties", dict(self._all_defaults()))
        object.__setattr__(self, "_dynamic", {})
        object.__setattr__(self, "_signals", {})
        object.__setattr__(self, "_blocked", False)
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "_parent", None)
        if parent is not None:
            self._set_parent(parent)

    @classmethod
    def _all_defaults(cls) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            values.update(getattr(klass, "DEFAULTS", {}) if "DEFAULTS" in vars(klass) else {})
        return values

    def _describe(self) -> str:
        return f"{self.REAL}({self._properties.get('objectName', '')!r})"

    def __getattr__(self, name: str) -> Any:  # only reached when the fake does not define the name
        if name.startswith("_"):
            raise AttributeError(name)
        kind = facts.kind(self.REAL, name)
        if kind == "property":
            if name in self._properties:
                return self._properties[name]
            raise NotImplementedError(f"{self.REAL}.{name}: a real property with no faked value")
        if kind == "signal":
            if name not in self._signals:
                self._signals[name] = Signal(self, name)
            return self._signals[name]
        if kind is not None:
            raise NotImplementedError(f"{self.REAL}.{name} exists ({facts.where(self.REAL, name)}) but is not faked")
        raise AttributeError(f"{self.REAL} has no member {name!r} reachable from Python ({facts.where(self.REAL)})")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        info = facts.property_info(self.REAL, name)
        if info is None:
            raise AttributeError(f"{self.REAL} has no property {name!r} ({facts.where(self.REAL)})")
        if not info.get("write"):
            raise AttributeError(f"{self.REAL}.{name} is read-only")
        setter = getattr(type(self), f"_set_{name}", None)
        if setter is not None:
            setter(self, value)
        else:
            self._properties[name] = value

    # QObject

    def _set_parent(self, parent: StrictQObject | None) -> None:
        if self._parent is not None:
            self._parent._children.remove(self)
        object.__setattr__(self, "_parent", parent)
        if parent is not None:
            parent._children.append(self)

    def parent(self) -> StrictQObject | None:
        return self._parent

    def children(self) -> list[StrictQObject]:
        return list(self._children)

    def findChildren(self, kind: type = None, name: str = "") -> list[StrictQObject]:  # noqa: RUF013
        found = []
        for child in self._children:
            if (kind is None or isinstance(child, kind)) and (not name or child.objectName == name):
                found.append(child)
            found += child.findChildren(kind, name)
        return found

    def property(self, name: str) -> Any:
        """A Q_PROPERTY's value or a dynamic property (None when not set, as an invalid QVariant)."""
        if name in self._dynamic:
            return self._dynamic[name]
        if facts.kind(self.REAL, name) == "property":
            return getattr(self, name)
        return None

    def setProperty(self, name: str, value: Any) -> bool:
        if facts.kind(self.REAL, name) == "property":
            setattr(self, name, value)
            return True
        self._dynamic[name] = value
        return False

    def blockSignals(self, block: bool) -> bool:
        previous = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return previous

    def signalsBlocked(self) -> bool:
        return self._blocked

    def isWidgetType(self) -> bool:
        return False

    def connect(self, signature: str, slot: Any) -> bool:  # PythonQt: obj.connect("signal(args)", callable)
        name = signature.split("(", 1)[0]
        if facts.kind(self.REAL, name) != "signal":
            raise AttributeError(f"{self.REAL} has no signal {signature!r} ({facts.where(self.REAL)})")
        return getattr(self, name).connect(slot)

    def disconnect(self, signature: str, slot: Any = None) -> bool:
        name = signature.split("(", 1)[0]
        if facts.kind(self.REAL, name) != "signal":
            raise AttributeError(f"{self.REAL} has no signal {signature!r}")
        return getattr(self, name).disconnect(slot)


class QObject(StrictQObject):
    REAL = "QObject"


class QTimer(StrictQObject):
    """A timer the test's event loop fires (:func:`.user.process_events`)."""

    REAL = "QTimer"
    DEFAULTS: ClassVar[dict[str, Any]] = {"interval": 0, "singleShot": False}
    _running: ClassVar[list[QTimer]] = []

    def setInterval(self, milliseconds: int) -> None:
        self._properties["interval"] = int(milliseconds)

    def start(self, milliseconds: int | None = None) -> None:
        if milliseconds is not None:
            self.setInterval(milliseconds)
        if self not in QTimer._running:
            QTimer._running.append(self)

    def stop(self) -> None:
        if self in QTimer._running:
            QTimer._running.remove(self)

    def isActive(self) -> bool:
        return self in QTimer._running

    @property
    def active(self) -> bool:
        return self.isActive()


# Widgets


class QWidget(StrictQObject):
    REAL = "QWidget"
    DEFAULTS: ClassVar[dict[str, Any]] = {"enabled": True, "visible": True, "toolTip": "", "objectName": ""}

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__(parent)
        object.__setattr__(self, "_layout", None)

    def isWidgetType(self) -> bool:
        return True

    def setEnabled(self, enabled: bool) -> None:
        self._properties["enabled"] = bool(enabled)

    def isEnabled(self) -> bool:
        return self._properties["enabled"]

    def setVisible(self, visible: bool) -> None:
        self._properties["visible"] = bool(visible)

    def isVisible(self) -> bool:
        return self._properties["visible"]

    def show(self) -> None:
        self.setVisible(True)

    def hide(self) -> None:
        self.setVisible(False)

    def setToolTip(self, text: str) -> None:
        self._properties["toolTip"] = str(text)

    def layout(self) -> QLayout | None:
        return self._layout

    def setLayout(self, layout: QLayout) -> None:
        object.__setattr__(self, "_layout", layout)
        layout._owner = self
        layout._set_parent(self)


class QFrame(QWidget):
    REAL = "QFrame"


class QLabel(QFrame):
    REAL = "QLabel"
    DEFAULTS: ClassVar[dict[str, Any]] = {"text": "", "wordWrap": False, "textInteractionFlags": ""}

    def setText(self, text: str) -> None:
        self._properties["text"] = str(text)

    def _set_text(self, text: str) -> None:
        self.setText(text)


class QProgressBar(QWidget):
    REAL = "QProgressBar"
    DEFAULTS: ClassVar[dict[str, Any]] = {"value": 0, "minimum": 0, "maximum": 100}

    def setValue(self, value: int) -> None:
        if not isinstance(value, int):  # PythonQt converts only ints to the int slot
            raise TypeError(f"QProgressBar.setValue(int) called with {type(value).__name__}")
        self._properties["value"] = value
        self.valueChanged.emit(value)


class QAbstractButton(QWidget):
    REAL = "QAbstractButton"
    DEFAULTS: ClassVar[dict[str, Any]] = {"text": "", "checkable": False, "checked": False}

    def setText(self, text: str) -> None:
        self._properties["text"] = str(text)

    def setChecked(self, checked: bool) -> None:
        self._set_checked(checked)

    def isChecked(self) -> bool:
        return self._properties["checked"]

    def _set_checked(self, checked: bool) -> None:
        checked = bool(checked)
        if checked == self._properties["checked"] or not self._properties["checkable"]:
            return
        self._properties["checked"] = checked
        self.toggled.emit(checked)
        self._state_changed()

    def _state_changed(self) -> None:
        pass

    def click(self) -> None:
        """Qt's click(): nothing when disabled; toggles a checkable button; then ``clicked(checked)``."""
        if not self._properties["enabled"]:
            return
        if self._properties["checkable"]:
            self._set_checked(not self._properties["checked"])
        self.clicked.emit(self._properties["checked"])


class QPushButton(QAbstractButton):
    REAL = "QPushButton"


class QCheckBox(QAbstractButton):
    REAL = "QCheckBox"
    DEFAULTS: ClassVar[dict[str, Any]] = {"checkable": True}

    def _state_changed(self) -> None:
        self.stateChanged.emit(2 if self._properties["checked"] else 0)  # Qt::Checked / Qt::Unchecked


class QComboBox(QWidget):
    """Items with text and data; ``currentIndex`` -1 when empty (Qt 5.15 QComboBox)."""

    REAL = "QComboBox"
    DEFAULTS: ClassVar[dict[str, Any]] = {"currentIndex": -1, "editable": False}

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__(parent)
        object.__setattr__(self, "_items", [])

    def addItem(self, text: str, userData: Any = None) -> None:
        self._items.append((str(text), userData))
        if self._properties["currentIndex"] < 0:  # the first item becomes current (Qt emits the change)
            self._set_currentIndex(0)

    def clear(self) -> None:
        self._items.clear()
        self._set_currentIndex(-1)

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def currentText(self) -> str:
        index = self._properties["currentIndex"]
        return self._items[index][0] if index >= 0 else ""

    def itemText(self, index: int) -> str:
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def itemData(self, index: int) -> Any:
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def findData(self, data: Any) -> int:
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def findText(self, text: str) -> int:
        return next((i for i, (t, _) in enumerate(self._items) if t == text), -1)

    def setCurrentIndex(self, index: int) -> None:
        self._set_currentIndex(index)

    def _set_currentIndex(self, index: int) -> None:
        index = int(index) if -1 <= int(index) < len(self._items) else -1
        if index == self._properties["currentIndex"]:
            return
        self._properties["currentIndex"] = index
        self.currentIndexChanged.emit(index)
        self.currentTextChanged.emit(self.currentText)


class ctkCollapsibleButton(QAbstractButton):
    REAL = "ctkCollapsibleButton"
    DEFAULTS: ClassVar[dict[str, Any]] = {"collapsed": False}


class ctkSliderWidget(QWidget):
    """A slider with a spin box (CTK Libs/Widgets/ctkSliderWidget.h): value clamped to [minimum, maximum]."""

    REAL = "ctkSliderWidget"
    DEFAULTS: ClassVar[dict[str, Any]] = {"value": 0.0, "minimum": 0.0, "maximum": 99.0, "singleStep": 1.0}
    DEFAULTS["decimals"] = 2

    def setValue(self, value: float) -> None:
        self._set_value(value)

    def _set_value(self, value: float) -> None:
        value = min(max(float(value), self._properties["minimum"]), self._properties["maximum"])
        if value == self._properties["value"]:
            return
        self._properties["value"] = value
        self.valueChanged.emit(value)

    def _set_minimum(self, value: float) -> None:
        self._properties["minimum"] = float(value)
        self._set_value(self._properties["value"])

    def _set_maximum(self, value: float) -> None:
        self._properties["maximum"] = float(value)
        self._set_value(self._properties["value"])


# MRML widgets


class qMRMLWidget(QWidget):
    REAL = "qMRMLWidget"

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__(parent)
        object.__setattr__(self, "_scene", None)

    def setMRMLScene(self, scene: Any) -> None:
        object.__setattr__(self, "_scene", scene)
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self) -> Any:
        return self._scene


class qMRMLNodeComboBox(QWidget):
    """Lists nodes of ``nodeTypes`` (Slicer Libs/MRML/Widgets/qMRMLNodeComboBox.h)."""

    REAL = "qMRMLNodeComboBox"
    DEFAULTS: ClassVar[dict[str, Any]] = {"nodeTypes": [], "showChildNodeTypes": True, "noneEnabled": False}
    DEFAULTS.update(addEnabled=True, removeEnabled=True)

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__(parent)
        object.__setattr__(self, "_scene", None)
        object.__setattr__(self, "_current", None)

    def setMRMLScene(self, scene: Any) -> None:
        object.__setattr__(self, "_scene", scene)

    def mrmlScene(self) -> Any:
        return self._scene

    def currentNode(self) -> Any:
        return self._current

    def currentNodeID(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node: Any) -> None:
        if node is not None and not any(node.IsA(t) for t in self._properties["nodeTypes"]):
            raise AssertionError(f"{node.GetClassName()} is not one of the combo box's {self.nodeTypes}")
        if node is self._current:
            return
        object.__setattr__(self, "_current", node)
        self.currentNodeChanged.emit(node)
        self.currentNodeIDChanged.emit(self.currentNodeID())


class QModelIndex(StrictQObject):
    """An index into a model (valid while the model is not reset)."""

    REAL = "QModelIndex"

    def __init__(self, model: Any = None, row: int = -1, column: int = -1):
        super().__init__()
        object.__setattr__(self, "_at", (model, row, column))

    def row(self) -> int:
        return self._at[1]

    def column(self) -> int:
        return self._at[2]

    def isValid(self) -> bool:
        return self._at[0] is not None and self._at[1] >= 0

    def model(self) -> Any:
        return self._at[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QModelIndex) and self._at == other._at

    def __hash__(self) -> int:
        return hash((id(self._at[0]), self._at[1], self._at[2]))


class qMRMLTableModel(StrictQObject):
    """The view's model of a ``vtkMRMLTableNode``.

    Slicer v5.10.0 Libs/MRML/Widgets/qMRMLTableModel.cxx: unless the node's
    ``UseColumnTitleAsColumnHeader`` is on, model row 0 holds the column titles and table row r is
    model row r + 1 (``mrmlTableRowIndex``). Not transposed.
    """

    REAL = "qMRMLTableModel"

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_node", None)

    def _header_rows(self) -> int:
        return 0 if self._node is None or self._node.GetUseColumnTitleAsColumnHeader() else 1

    def rowCount(self, parent: Any = None) -> int:
        return 0 if self._node is None else self._node.GetNumberOfRows() + self._header_rows()

    def columnCount(self, parent: Any = None) -> int:
        return 0 if self._node is None else self._node.GetNumberOfColumns()

    def index(self, row: int, column: int, parent: Any = None) -> QModelIndex:
        if 0 <= row < self.rowCount() and 0 <= column < self.columnCount():
            return QModelIndex(self, row, column)
        return QModelIndex()


class QSortFilterProxyModel(StrictQObject):
    """The view's proxy of its table model; no sorting or filtering is switched on (qMRMLTableView.cxx init)."""

    REAL = "QSortFilterProxyModel"

    def __init__(self, source: qMRMLTableModel):
        super().__init__()
        object.__setattr__(self, "_source", source)

    def sourceModel(self) -> qMRMLTableModel:
        return self._source

    def mapToSource(self, index: QModelIndex) -> QModelIndex:
        if index.model() is not self:
            raise AssertionError("mapToSource() takes an index of the proxy model")
        return self._source.index(index.row(), index.column())

    def mapFromSource(self, index: QModelIndex) -> QModelIndex:
        if index.model() is not self._source:
            raise AssertionError("mapFromSource() takes an index of the source model")
        return QModelIndex(self, index.row(), index.column()) if index.isValid() else QModelIndex()

    def index(self, row: int, column: int, parent: Any = None) -> QModelIndex:
        return self.mapFromSource(self._source.index(row, column))

    def rowCount(self, parent: Any = None) -> int:
        return self._source.rowCount()

    def columnCount(self, parent: Any = None) -> int:
        return self._source.columnCount()


class QItemSelectionModel(StrictQObject):
    """Selected cells of the view's (proxy) model.

    ``selectedRows(column)`` gives the rows *all* of whose columns are selected (Qt 5.15
    QItemSelectionModel), so a click on one cell of a view that selects items gives none.
    """

    REAL = "QItemSelectionModel"

    def __init__(self, model: QSortFilterProxyModel):
        super().__init__()
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_cells", set())

    def model(self) -> QSortFilterProxyModel:
        return self._model

    def selectedRows(self, column: int = 0) -> list[QModelIndex]:
        columns = self._model.columnCount()
        rows = sorted({r for r, _ in self._cells})
        full = [r for r in rows if columns and all((r, c) in self._cells for c in range(columns))]
        return [self._model.index(r, column) for r in full]

    def selectedIndexes(self) -> list[QModelIndex]:
        return [self._model.index(r, c) for r, c in sorted(self._cells)]

    def hasSelection(self) -> bool:
        return bool(self._cells)

    def clearSelection(self) -> None:
        self._cells.clear()


class qMRMLTableView(QWidget):
    """A table node's spreadsheet (Slicer v5.10.0 Libs/MRML/Widgets/qMRMLTableView.{h,cxx}).

    The view's model is a QSortFilterProxyModel over the qMRMLTableModel. ``setMRMLTableNode``
    emits ``selectionChanged()`` (qMRMLTableView.cxx), as does every change of the selected cells.
    ``selectRow`` selects a row only if the selection behaviour allows rows (Qt QTableView);
    ``selectionBehavior``/``selectionMode`` default to SelectItems / ExtendedSelection.
    """

    REAL = "qMRMLTableView"
    DEFAULTS: ClassVar[dict[str, Any]] = {"selectionBehavior": "SelectItems", "selectionMode": "ExtendedSelection"}

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__(parent)
        source = qMRMLTableModel()
        proxy = QSortFilterProxyModel(source)
        object.__setattr__(self, "_table_model", source)
        object.__setattr__(self, "_proxy", proxy)
        object.__setattr__(self, "_selection", QItemSelectionModel(proxy))
        object.__setattr__(self, "_scene", None)

    def setMRMLScene(self, scene: Any) -> None:
        object.__setattr__(self, "_scene", scene)

    def mrmlScene(self) -> Any:
        return self._scene

    def setMRMLTableNode(self, node: Any) -> None:
        self._table_model._node = node
        self._selection.clearSelection()
        self.selectionChanged.emit()

    def mrmlTableNode(self) -> Any:
        return self._table_model._node

    def tableModel(self) -> qMRMLTableModel:
        return self._table_model

    def sortFilterProxyModel(self) -> QSortFilterProxyModel:
        return self._proxy

    def model(self) -> QSortFilterProxyModel:
        return self._proxy

    def selectionModel(self) -> QItemSelectionModel:
        return self._selection

    def clearSelection(self) -> None:
        had = self._selection.hasSelection()
        self._selection.clearSelection()
        if had:
            self.selectionChanged.emit()

    def selectRow(self, row: int) -> None:
        if self._properties["selectionBehavior"] == "SelectItems" or not 0 <= row < self._proxy.rowCount():
            return
        self._select({(row, c) for c in range(self._proxy.columnCount())})

    def _select(self, cells: set[tuple[int, int]]) -> None:
        if self._properties["selectionMode"] == "NoSelection":
            return
        self._selection._cells.clear()
        self._selection._cells.update(cells)
        self.selectionChanged.emit()


class qMRMLSegmentEditorWidget(qMRMLWidget):
    """The embedded Segment Editor (Slicer v5.10.0 Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx).

    The active effect is the editor node's ``ActiveEffectName`` (``setActiveEffect`` writes it,
    and does nothing without an editor node); activating an effect sets up the view observations,
    deactivating removes them; ``setSegmentationNode`` to another node deactivates the effect;
    ``installKeyboardShortcuts`` replaces the shortcuts on the main window.
    """

    REAL = "qMRMLSegmentEditorWidget"
    _EFFECTS: ClassVar[tuple[str, ...]] = ("Paint", "Draw", "Erase", "Level tracing", "Grow from seeds", "Scissors")
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "segmentationNodeSelectorVisible": True,
        "sourceVolumeNodeSelectorVisible": True,
        "switchToSegmentationsButtonVisible": True,
    }

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__(parent)
        for name in ("_editor_node", "_segmentation", "_source"):
            object.__setattr__(self, name, None)
        object.__setattr__(self, "_views_observed", False)
        object.__setattr__(self, "_shortcuts", False)

    def setMRMLSegmentEditorNode(self, node: Any) -> None:
        object.__setattr__(self, "_editor_node", node)

    def mrmlSegmentEditorNode(self) -> Any:
        return self._editor_node

    def setSegmentationNode(self, node: Any) -> None:
        if node is self._segmentation:
            return
        object.__setattr__(self, "_segmentation", node)
        if self._editor_node is not None:
            self._editor_node.SetAndObserveSegmentationNode(node)
        self.setActiveEffect(None)

    def segmentationNode(self) -> Any:
        return self._segmentation

    def setSourceVolumeNode(self, node: Any) -> None:
        object.__setattr__(self, "_source", node)
        if self._editor_node is not None:
            self._editor_node.SetAndObserveSourceVolumeNode(node)

    def sourceVolumeNode(self) -> Any:
        return self._source

    def activeEffect(self) -> str | None:
        name = self._editor_node.GetActiveEffectName() if self._editor_node is not None else ""
        return name or None

    def setActiveEffect(self, effect: Any) -> None:
        if effect is not None:
            raise NotImplementedError("effect objects are not faked; use setActiveEffectByName")
        self._activate("")

    def setActiveEffectByName(self, name: str) -> None:
        if name not in self._EFFECTS:
            raise AssertionError(f"no effect named {name!r}")
        self._activate(name)

    def _activate(self, name: str) -> None:
        if self._editor_node is None:
            if name:
                log.error("qMRMLSegmentEditorWidget::setActiveEffect: Invalid segment editor parameter set node")
            return
        self._editor_node.SetActiveEffectName(name)
        object.__setattr__(self, "_views_observed", bool(name))

    def setupViewObservations(self) -> None:
        object.__setattr__(self, "_views_observed", True)

    def removeViewObservations(self) -> None:
        object.__setattr__(self, "_views_observed", False)

    def installKeyboardShortcuts(self, parent: Any = None) -> None:
        object.__setattr__(self, "_shortcuts", True)

    def uninstallKeyboardShortcuts(self) -> None:
        object.__setattr__(self, "_shortcuts", False)


# Layouts


class QLayout(StrictQObject):
    REAL = "QLayout"

    def __init__(self, parent: StrictQObject | None = None):
        super().__init__()
        object.__setattr__(self, "_owner", None)
        object.__setattr__(self, "_items", [])
        if parent is not None:
            parent.setLayout(self)

    def addWidget(self, widget: QWidget, *args: Any) -> None:
        self._items.append(widget)
        owner = self._owner if self._owner is not None else self._parent
        if owner is not None:
            widget._set_parent(owner)

    def count(self) -> int:
        return len(self._items)


class QBoxLayout(QLayout):
    REAL = "QBoxLayout"


class QVBoxLayout(QBoxLayout):
    REAL = "QVBoxLayout"


class QHBoxLayout(QBoxLayout):
    REAL = "QHBoxLayout"


class QFormLayout(QLayout):
    REAL = "QFormLayout"


class QFileDialog(QWidget):
    """The folder chooser: answers with :data:`answers` (the user's choices, in order; "" = Cancel)."""

    REAL = "QFileDialog"
    _answers: ClassVar[list[str]] = []

    @staticmethod
    def getExistingDirectory(parent: Any = None, caption: str = "", directory: str = "", options: Any = None) -> str:
        if not QFileDialog._answers:
            raise AssertionError("a folder dialog opened but the test gave no answer")
        return QFileDialog._answers.pop(0)


# .ui files (as QUiLoader builds them)

FAKES = {
    cls.REAL: cls
    for cls in (
        QWidget,
        QFrame,
        QLabel,
        QProgressBar,
        QPushButton,
        QCheckBox,
        QComboBox,
        ctkCollapsibleButton,
        ctkSliderWidget,
        qMRMLWidget,
        qMRMLNodeComboBox,
        qMRMLTableView,
        QVBoxLayout,
        QHBoxLayout,
        QFormLayout,
    )
}


def _value(element: ElementTree.Element) -> Any:
    kind = element.tag
    text = element.text or ""
    if kind == "string":
        return text
    if kind == "bool":
        return text == "true"
    if kind == "double":
        return float(text)
    if kind == "number":
        return int(text)
    if kind in ("enum", "set"):
        return text.split("::")[-1]
    if kind == "stringlist":
        return [s.text or "" for s in element.findall("string")]
    return None  # geometry and sizes: not faked


def load_ui(path: str | Path) -> QWidget:
    """Build the widget tree of a Qt Designer file, with a fake for every class (a class without one raises)."""
    root = ElementTree.parse(path).getroot()
    top = _build_widget(root.find("widget"), None)
    for connection in root.iter("connection"):  # as uic connects them
        sender = top if connection.findtext("sender") == top.objectName else _named(top, connection.findtext("sender"))
        receiver = _named(top, connection.findtext("receiver"))
        slot_name = connection.findtext("slot").split("(", 1)[0]
        if facts.kind(receiver.REAL, slot_name) not in ("slot", "invokable", "method"):
            raise AttributeError(f"{receiver.REAL} has no slot {slot_name}")
        sender.connect(connection.findtext("signal"), getattr(receiver, slot_name))
    return top


def _named(top: QWidget, name: str) -> QWidget:
    found = [w for w in top.findChildren(QWidget) if w.objectName == name]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} widgets named {name!r}")
    return found[0]


def _build_widget(element: ElementTree.Element, parent: QWidget | None) -> QWidget:
    class_name = element.get("class")
    if class_name not in FAKES:
        raise NotImplementedError(f"no strict fake for {class_name} (add one from its header)")
    widget = FAKES[class_name](parent)
    widget.objectName = element.get("name")
    for prop in element.findall("property"):
        name, value = prop.get("name"), _value(prop[0])
        if value is None or name == "geometry":
            continue
        if prop.get("stdset") == "0":
            widget._dynamic[name] = value
        else:
            setattr(widget, name, value)
    layout = element.find("layout")
    if layout is not None:
        _build_layout(layout, widget)
    return widget


def _build_layout(element: ElementTree.Element, owner: QWidget) -> QLayout:
    layout_class = element.get("class")
    if layout_class not in FAKES:
        raise NotImplementedError(f"no strict fake for {layout_class}")
    layout = FAKES[layout_class]()
    layout.objectName = element.get("name")
    owner.setLayout(layout) if owner.layout() is None else layout._set_parent(owner)
    layout._owner = owner
    for item in element.findall("item"):
        child = item[0]
        if child.tag == "widget":
            layout.addWidget(_build_widget(child, None))
        elif child.tag == "layout":
            _build_layout(child, owner)
    return layout
