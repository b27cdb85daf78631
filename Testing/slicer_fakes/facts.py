"""What Python can reach on the real Qt, CTK and Slicer classes: ``api_facts.json``.

The file is made by ``extract_api_facts.py`` from the headers of Qt 5.15.8, the CTK that Slicer
v5.10.0 builds, and Slicer v5.10.0 (its ``_about`` says how). For Qt's classes PythonQt wraps the
public methods; CTK and Slicer classes are wrapped with constructors only (CTK's
``ctkWrapPythonQt.py``), so from Python only their properties, signals, slots and Q_INVOKABLE
methods exist. Members of base classes are reachable too.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

FACTS: dict[str, Any] = json.loads((Path(__file__).with_name("api_facts.json")).read_text(encoding="utf-8"))
# PythonQt's own members of every wrapped QObject (PythonQt's PythonQtInstanceWrapper): string-signature
# connect/disconnect and className().
PYTHONQT_MEMBERS = frozenset({"connect", "disconnect", "className"})


@functools.cache
def chain(class_name: str) -> tuple[str, ...]:
    """The class and its bases, nearest first (only classes with facts)."""
    if class_name not in FACTS:
        raise KeyError(f"no API facts for {class_name}; add it to extract_api_facts.py")
    order = [class_name]
    for base in FACTS[class_name]["bases"]:
        if base in FACTS:
            order += [b for b in chain(base) if b not in order]
    return tuple(order)


@functools.cache
def members(class_name: str) -> frozenset[str]:
    """Every member name Python can reach on the class."""
    return frozenset(name for c in chain(class_name) for name in FACTS[c]["python_visible"])


def kind(class_name: str, name: str) -> str | None:
    """``property``, ``signal``, ``slot``, ``invokable`` or ``method`` (None: Python cannot reach it)."""
    if name in PYTHONQT_MEMBERS:
        return "method"
    for c in chain(class_name):
        entry = FACTS[c]
        if name not in entry["python_visible"]:
            continue
        for key, label in (("properties", "property"), ("signals", "signal"), ("slots", "slot")):
            if name in entry[key]:
                return label
        return "invokable" if name in entry["invokables"] else "method"
    return None


def property_info(class_name: str, name: str) -> dict[str, str] | None:
    """A property's type and accessors (``read``, ``write``...), from the nearest class declaring it."""
    for c in chain(class_name):
        if name in FACTS[c]["properties"] and name in FACTS[c]["python_visible"]:
            return FACTS[c]["property_info"].get(name, {"write": "?"})
    return None


def where(class_name: str, name: str | None = None) -> str:
    """Where the fact comes from, e.g. ``Slicer v5.10.0 Libs/MRML/Widgets/qMRMLTableView.h``."""
    owner = next((c for c in chain(class_name) if name in FACTS[c]["python_visible"]), class_name)
    return f"{FACTS[owner]['source']} {FACTS[owner]['header']}"
