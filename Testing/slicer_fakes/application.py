"""The Slicer application around a scripted module, faked strictly; the MRML scene is real (slicer-core).

:func:`install` puts fake ``qt``, ``ctk``, ``slicer.i18n``, ``slicer.parameterNodeWrapper`` and
``slicer.ScriptedLoadableModule`` modules in ``sys.modules``, the strict widget classes and a fake
``slicer.app`` on the real ``slicer`` package, and replaces the GUI functions of the real
``slicer.util`` (dialogs, ``loadUI``, ``pip_install``...) with recording ones of the same
signatures (Slicer v5.10.0 ``Base/Python/slicer/util.py``). Everything else of ``slicer`` is the
real MRML. The scripted-module base classes follow ``Base/Python/slicer/ScriptedLoadableModule.py``
(v5.10.0): the widget's ``layout`` is its parent's, ``resourcePath`` goes through ``modulePath``,
``onReload`` calls ``slicer.util.reloadScriptedModule``, the logic's parameter node is the
scene's singleton ``vtkMRMLScriptedModuleNode`` tagged with the module's name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import types
import unittest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import parameter_node, widgets

log = logging.getLogger(__name__)


@dataclass
class Recorder:
    """What the application was asked to do (dialogs, installs, translations, reloads)."""

    dialogs: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    confirm_answers: list[bool] = field(default_factory=list)  # the user's next answers (default: OK)
    pip: list[Any] = field(default_factory=list)
    translations: list[tuple[str, str]] = field(default_factory=list)  # (context, text)
    reloads: list[str] = field(default_factory=list)
    connections: list[tuple[str, Any]] = field(default_factory=list)
    widgets: list[Any] = field(default_factory=list)  # module widgets opened (cleaned up as Slicer does at exit)


class ModulePanel(widgets.QWidget):
    """The module's panel, a qSlicerScriptedLoadableModuleWidget: ``isEntered`` is its read-only property
    (Slicer v5.10.0 Base/QTGUI/qSlicerAbstractModuleWidget.h), set by the application on enter/exit."""

    REAL = "QWidget"

    def __init__(self) -> None:
        super().__init__()
        self.setLayout(widgets.QVBoxLayout())
        object.__setattr__(self, "_entered", False)

    def __getattr__(self, name: str) -> Any:
        if name == "isEntered":
            return self._entered
        return super().__getattr__(name)


class Application:
    """``slicer.app``: the members the module and the base classes use (qSlicerApplication/qSlicerCoreApplication)."""

    def __init__(self, documents: Path, temporary: Path, recorder: Recorder):
        self.defaultScenePath = str(documents)
        self.temporaryPath = str(temporary)
        self._recorder = recorder

    def testingEnabled(self) -> bool:
        return False

    def processEvents(self) -> None:
        pass

    def connect(self, signal: str, slot: Any) -> None:
        self._recorder.connections.append((signal, slot))

    def setOverrideCursor(self, cursor: Any) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def moduleManager(self) -> Any:
        recorder = self._recorder
        return types.SimpleNamespace(connect=lambda signal, slot: recorder.connections.append((signal, slot)))


def _scripted_module(recorder: Recorder, module_file: Path) -> types.ModuleType:
    import slicer

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ModuleParent:
        """qSlicerScriptedLoadableModule's Python-visible module metadata."""

        __slots__ = ("acknowledgementText", "categories", "contributors", "dependencies", "helpText", "icon")
        __slots__ += ("path", "title")

        def __init__(self) -> None:
            self.path = str(module_file)

    class ScriptedLoadableModule:
        def __init__(self, parent: ModuleParent):
            self.parent = parent
            self.moduleName = type(self).__name__
            parent.title, parent.categories, parent.dependencies = "", [], []
            parent.contributors, parent.helpText, parent.acknowledgementText = [], "", ""
            slicer.selfTests = getattr(slicer, "selfTests", {})
            slicer.selfTests[self.moduleName] = self.runTest

        def runTest(self, msec: int = 100, **kwargs: Any) -> None:
            raise NotImplementedError("the self-test needs the application")

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None):
            if parent is None:
                raise NotImplementedError("the application always gives the widget its panel")
            self.moduleName = type(self).__name__.removesuffix("Widget")
            self.developerMode = False
            self.parent = parent
            self.layout = parent.layout()
            slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self.cleanup)

        def resourcePath(self, filename: str) -> str:
            return str(Path(slicer.util.modulePath(self.moduleName)).parent / "Resources" / filename)

        def setup(self) -> None:
            pass  # the developer section only in developer mode

        def cleanup(self) -> None:
            pass

        def onReload(self) -> None:
            slicer.util.reloadScriptedModule(self.moduleName)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent: Any = None):
            self.moduleName = type(self).__name__.removesuffix("Logic")
            self.isSingletonParameterNode = True

        def getParameterNode(self) -> Any:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self) -> Any:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, requestedDelay: Any = None, msec: Any = None) -> None:
            recorder.dialogs.append(("delay", message))

    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    scripted.ModuleParent = ModuleParent
    return scripted


def _util_functions(recorder: Recorder, module_file: Path) -> dict[str, Any]:
    """Stand-ins for the GUI functions of slicer.util, with the real signatures."""

    def loadUI(path: str) -> widgets.QWidget:
        if not Path(path).is_file():
            raise RuntimeError(f"Could not load UI file: file not found {path}\n\n")
        return widgets.load_ui(path)

    def childWidgetVariables(widget: widgets.QWidget) -> Any:
        ui = type("", (), {})()
        for child in widget.findChildren(widgets.StrictQObject):
            if child.objectName:
                setattr(ui, child.objectName, child)
        return ui

    def _dialog(kind: str) -> Any:
        def show(text: str, windowTitle: Any = None, parent: Any = None, standardButtons: Any = None, **kwargs: Any):
            recorder.dialogs.append(
                (kind, str(text) + ("\n" + kwargs["detailedText"] if "detailedText" in kwargs else ""))
            )

        return show

    def confirmOkCancelDisplay(text: str, windowTitle: Any = None, parent: Any = None, **kwargs: Any) -> bool:
        recorder.dialogs.append(("confirm", str(text)))
        return recorder.confirm_answers.pop(0) if recorder.confirm_answers else True

    @contextlib.contextmanager
    def tryWithErrorDisplay(message: Any = None, show: bool = True, waitCursor: bool = False):
        try:
            yield
        except Exception as exc:
            if show:
                recorder.dialogs.append(("error", f"{message}\n\n{exc}" if message else str(exc)))
            raise

    def pip_install(requirements: Any, **kwargs: Any) -> None:
        recorder.pip.append(requirements)
        raise AssertionError(f"a test must not install packages: pip_install({requirements!r})")

    def modulePath(moduleName: str) -> str:
        if moduleName != module_file.stem:
            raise AssertionError(f"no module {moduleName}")
        return str(module_file)

    def reloadScriptedModule(moduleName: str) -> None:
        recorder.reloads.append(moduleName)

    return {
        "loadUI": loadUI,
        "childWidgetVariables": childWidgetVariables,
        "errorDisplay": _dialog("error"),
        "warningDisplay": _dialog("warning"),
        "infoDisplay": _dialog("info"),
        "confirmOkCancelDisplay": confirmOkCancelDisplay,
        "tryWithErrorDisplay": tryWithErrorDisplay,
        "mainWindow": lambda: None,
        "pip_install": pip_install,
        "modulePath": modulePath,
        "reloadScriptedModule": reloadScriptedModule,
    }


def install(monkeypatch: Any, module_file: Path, documents: Path, temporary: Path) -> Recorder:
    """Fake the application around the real MRML for this test (undone by ``monkeypatch``).

    Call :func:`shut_down` at the end, as Slicer unloads its modules when it exits.
    """
    import slicer

    recorder = Recorder()
    qt = types.ModuleType("qt")
    for name in ("QObject", "QTimer", "QWidget", "QFileDialog", "QVBoxLayout", "QHBoxLayout", "QFormLayout"):
        setattr(qt, name, getattr(widgets, name))
    qt.Qt = types.SimpleNamespace(WaitCursor=3)
    ctk = types.ModuleType("ctk")
    for name in ("ctkCollapsibleButton", "ctkSliderWidget"):
        setattr(ctk, name, getattr(widgets, name))
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text

    def translate(context: str, text: str) -> str:
        recorder.translations.append((context, text))
        return text

    i18n.translate = translate
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    for name in ("parameterNodeWrapper", "Choice", "WithinRange", "Minimum", "Maximum"):
        setattr(wrapper, name, getattr(parameter_node, name))
    modules = {
        "qt": qt,
        "ctk": ctk,
        "slicer.i18n": i18n,
        "slicer.parameterNodeWrapper": wrapper,
        "slicer.ScriptedLoadableModule": _scripted_module(recorder, module_file),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.10: no slicer.packaging
    monkeypatch.setattr(slicer, "app", Application(documents, temporary, recorder), raising=False)
    monkeypatch.setattr(slicer, "i18n", i18n, raising=False)
    for name in ("qMRMLSegmentEditorWidget", "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLTableView"):
        monkeypatch.setattr(slicer, name, getattr(widgets, name), raising=False)
    for name, function in _util_functions(recorder, module_file).items():
        monkeypatch.setattr(slicer.util, name, function, raising=False)
    monkeypatch.setattr(widgets.QTimer, "_running", [])
    monkeypatch.setattr(widgets.QFileDialog, "_answers", [])
    return recorder


def shut_down(recorder: Recorder) -> None:
    """The application exits: each module widget's ``cleanup()`` (moduleAboutToBeUnloaded)."""
    while recorder.widgets:
        recorder.widgets.pop().cleanup()


def load_module(module_file: Path) -> types.ModuleType:
    """Import the scripted module's file as Slicer does (by path, under its own name)."""
    spec = importlib.util.spec_from_file_location(module_file.stem, module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def open_module(module: types.ModuleType) -> tuple[Any, ModulePanel]:
    """Create the module and its widget as Slicer does, and enter it; returns (widget, panel)."""
    scripted = sys.modules["slicer.ScriptedLoadableModule"]
    module.SegUncertainty(scripted.ModuleParent())
    panel = ModulePanel()
    widget = module.SegUncertaintyWidget(panel)
    widget.setup()
    sys.modules["slicer"].app._recorder.widgets.append(widget)
    enter(widget, panel)
    return widget, panel


def enter(widget: Any, panel: ModulePanel) -> None:
    object.__setattr__(panel, "_entered", True)
    widget.enter()


def leave(widget: Any, panel: ModulePanel) -> None:
    widget.exit()
    object.__setattr__(panel, "_entered", False)
