"""What a user does to the fake widgets, as Qt reports it to the module (signals in Qt's order)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .widgets import QTimer


def process_events(until: Callable[[], bool], step: float = 0.05) -> None:
    """Run the event loop (fire the running timers) until ``until()`` is true, however long that takes
    (no test depends on wall time; CI's own limit ends a run that hangs)."""
    while not until():
        for timer in list(QTimer._running):
            timer.timeout.emit()
        time.sleep(step)


def click(button: Any) -> None:
    button.click()


def check(box: Any, checked: bool) -> None:
    if box.checked != checked:
        box.click()


def choose(combo: Any, text: str) -> None:
    """Pick the item showing ``text`` from a combo box's list."""
    index = combo.findText(text)
    assert index >= 0, f"no item {text!r} in {[combo.itemText(i) for i in range(combo.count)]}"
    combo.currentIndex = index
    combo.activated.emit(index)


def choose_node(combo: Any, node: Any) -> None:
    combo.setCurrentNode(node)


def drag(slider: Any, value: float) -> None:
    slider.value = value


def click_table_row(view: Any, table_row: int) -> None:
    """Click the first cell of the row that shows the table's row ``table_row``."""
    model = view.tableModel()
    model_row = table_row + model._header_rows()  # the header row, if the titles are not the header
    if view.selectionBehavior == "SelectRows":
        view._select({(model_row, c) for c in range(model.columnCount())})
    else:
        view._select({(model_row, 0)})
