#!/usr/bin/env python3
"""Extract member-name facts about Qt / CTK / Slicer widget classes from their C++ headers.

The output (api_facts.json) is the ground truth the strict test fakes are built from:
which members each real class declares, and in which access section, so that a fake
can raise AttributeError for a member the real class does not have.

Sources (read-only):
  * Slicer headers from a git mirror, read with ``git show <ref>:<path>``
  * CTK headers from a git mirror, read the same way
  * Qt 5.15.8 headers from an unpacked Debian qtbase5-dev package

The parser is a deliberately small, line/regex based C++ header reader:
comments and string contents are removed, preprocessor lines are dropped (so both
branches of every ``#if`` are kept), ``Q_PROPERTY``/``Q_DECLARE_FLAGS`` are
extracted, other ``Q_*``/``QT_*`` macros are stripped, and the class body is split
into declarations at top-level ``;`` and ``{...}`` bodies while access labels
(public:, public slots:, signals:, protected..., private...) are tracked.
Only member NAMES are kept (overloads collapse). Constructors, destructors and
operators are skipped; static methods are kept; nested classes/structs are skipped.

Python visibility (recorded per class as "python"):
  * "qt-wrapper": Qt's own classes. PythonQt's generated wrappers expose their public
    methods, plus Q_PROPERTYs as attributes, signals and slots.
  * "decorators-only": ctk*/qMRML* classes. CTK's CMake/ctkWrapPythonQt.py generates
    only constructor/destructor decorators, so only Q_PROPERTYs, signals, public slots
    and Q_INVOKABLE methods are reachable from Python; plain public C++ methods are not.
    Inherited Qt members are reachable through the Qt wrappers.

Stdlib only; Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))

DEFAULT_SLICER_REPO = "/work/.mirror/Slicer+Slicer/repo"
DEFAULT_SLICER_REF = "v5.10.0"
DEFAULT_CTK_REPO = "/work/.mirror/commontk+CTK/repo"
DEFAULT_CTK_REF = "dd4caeae7e979cf441e44ee85d3b0780120d113d"
DEFAULT_QT_INCLUDE = "/tmp/qtdeb/x/usr/include/x86_64-linux-gnu/qt5"
DEFAULT_OUTPUT = os.path.join(SCRIPT_DIR, "api_facts.json")

QT_SOURCE = "Qt 5.15.8 (Debian qtbase5-dev 5.15.8+dfsg-11+deb12u3)"

# (class name, header path) per origin.
SLICER_CLASSES = [
    ("qMRMLWidget", "Libs/MRML/Widgets/qMRMLWidget.h"),
    ("qMRMLNodeComboBox", "Libs/MRML/Widgets/qMRMLNodeComboBox.h"),
    ("qMRMLTableView", "Libs/MRML/Widgets/qMRMLTableView.h"),
    ("qMRMLTableModel", "Libs/MRML/Widgets/qMRMLTableModel.h"),
    ("qMRMLSliderWidget", "Libs/MRML/Widgets/qMRMLSliderWidget.h"),
    ("qMRMLSpinBox", "Libs/MRML/Widgets/qMRMLSpinBox.h"),
    ("qMRMLRangeWidget", "Libs/MRML/Widgets/qMRMLRangeWidget.h"),
    ("qMRMLSegmentEditorWidget", "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h"),
]

CTK_CLASSES = [
    (name, f"Libs/Widgets/{name}.h")
    for name in [
        "ctkCollapsibleButton",
        "ctkSliderWidget",
        "ctkComboBox",
        "ctkCheckBox",
        "ctkPushButton",  # base of ctkCheckablePushButton
        "ctkCheckablePushButton",
        "ctkPathLineEdit",
        "ctkDirectoryButton",
        "ctkRangeWidget",
        "ctkDoubleSlider",
        "ctkDoubleSpinBox",
        "ctkColorPickerButton",
        "ctkDoubleRangeSlider",
    ]
]

QT_CLASSES = [
    ("QObject", "QtCore/qobject.h"),
    ("QTimer", "QtCore/qtimer.h"),
    ("QItemSelectionModel", "QtCore/qitemselectionmodel.h"),
    ("QItemSelectionRange", "QtCore/qitemselectionmodel.h"),
    ("QItemSelection", "QtCore/qitemselectionmodel.h"),
    ("QModelIndex", "QtCore/qabstractitemmodel.h"),
    ("QAbstractItemModel", "QtCore/qabstractitemmodel.h"),
    ("QAbstractProxyModel", "QtCore/qabstractproxymodel.h"),
    ("QSortFilterProxyModel", "QtCore/qsortfilterproxymodel.h"),
    ("QStandardItemModel", "QtGui/qstandarditemmodel.h"),
    ("QPaintDevice", "QtGui/qpaintdevice.h"),  # second base of QWidget
    ("QWidget", "QtWidgets/qwidget.h"),
    ("QFrame", "QtWidgets/qframe.h"),
    ("QAbstractButton", "QtWidgets/qabstractbutton.h"),
    ("QPushButton", "QtWidgets/qpushbutton.h"),
    ("QCheckBox", "QtWidgets/qcheckbox.h"),
    ("QComboBox", "QtWidgets/qcombobox.h"),
    ("QLabel", "QtWidgets/qlabel.h"),
    ("QProgressBar", "QtWidgets/qprogressbar.h"),
    ("QLineEdit", "QtWidgets/qlineedit.h"),
    ("QAbstractScrollArea", "QtWidgets/qabstractscrollarea.h"),
    ("QAbstractItemView", "QtWidgets/qabstractitemview.h"),
    ("QTableView", "QtWidgets/qtableview.h"),
    ("QDialog", "QtWidgets/qdialog.h"),  # base of QFileDialog
    ("QFileDialog", "QtWidgets/qfiledialog.h"),
    ("QLayoutItem", "QtWidgets/qlayoutitem.h"),  # second base of QLayout
    ("QLayout", "QtWidgets/qlayout.h"),
    ("QBoxLayout", "QtWidgets/qboxlayout.h"),
    ("QHBoxLayout", "QtWidgets/qboxlayout.h"),
    ("QVBoxLayout", "QtWidgets/qboxlayout.h"),
    ("QFormLayout", "QtWidgets/qformlayout.h"),
    ("QAbstractSlider", "QtWidgets/qabstractslider.h"),
    ("QSlider", "QtWidgets/qslider.h"),
    ("QAbstractSpinBox", "QtWidgets/qabstractspinbox.h"),
    ("QSpinBox", "QtWidgets/qspinbox.h"),
    ("QDoubleSpinBox", "QtWidgets/qspinbox.h"),
    ("QTextEdit", "QtWidgets/qtextedit.h"),
]

# --------------------------------------------------------------------------- lexing


def strip_comments_and_strings(text: str) -> str:
    """Remove // and /* */ comments; blank the contents of string/char literals.

    Newlines are preserved so that preprocessor lines stay on their own line.
    """
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "/" and nxt == "*":
            j = text.find("*/", i + 2)
            chunk = text[i : (n if j < 0 else j + 2)]
            out.append("\n" * chunk.count("\n") or " ")
            i = n if j < 0 else j + 2
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "\n":  # unterminated: give up on this literal
                    break
                j += 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


DEPR_IF_RE = re.compile(r"^\s*#\s*if\s+QT_DEPRECATED_SINCE\b")


def drop_preprocessor(text: str) -> str:
    """Drop preprocessor lines (keeping both branches of every conditional).

    Blocks guarded by ``#if QT_DEPRECATED_SINCE(...)`` are bracketed with the marker
    tokens __DEPR_BEGIN__ / __DEPR_END__ so members declared there can be flagged.
    """
    lines = text.split("\n")
    out = []
    stack = []  # one bool per open #if: is it a QT_DEPRECATED_SINCE block?
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("#"):
            full = line
            while full.endswith("\\") and i + 1 < len(lines):
                i += 1
                full = full[:-1] + " " + lines[i]
            d = full.strip()[1:].strip()
            if re.match(r"if(n?def)?\b", d):
                depr = bool(DEPR_IF_RE.match(full))
                stack.append(depr)
                if depr:
                    out.append(" __DEPR_BEGIN__ ")
            elif re.match(r"(elif|else)\b", d):
                if stack and stack[-1]:
                    out.append(" __DEPR_END__ ")
                    stack[-1] = False
            elif re.match(r"endif\b", d):
                if stack and stack.pop():
                    out.append(" __DEPR_END__ ")
            out.append("")
        else:
            out.append(line)
        i += 1
    return "\n".join(out)


def match_close(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at text[start] (strings already blanked)."""
    depth = 0
    for j in range(start, len(text)):
        ch = text[j]
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {open_ch!r} at offset {start}")


def match_close_angle(text: str, start: int) -> int:
    """Index of the '>' closing the '<' at text[start]; parens are skipped over."""
    depth = 0
    j = start
    while j < len(text):
        ch = text[j]
        if ch == "(":
            j = match_close(text, j, "(", ")")
        elif ch == "<" and text[j + 1 : j + 2] not in ("=", "<"):
            depth += 1
        elif ch == ">" and text[j - 1] != "-" and text[j + 1 : j + 2] != "=":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise ValueError(f"unbalanced '<' at offset {start}")


# --------------------------------------------------------------------------- class body


def find_class(text: str, name: str):
    """Return (kind, bases, body) for the definition of class/struct `name`."""
    rx = re.compile(
        r"\b(class|struct)\s+(?:[A-Z_][A-Z0-9_]*\s+)*" + re.escape(name) + r"\b\s*(?:final\s*)?(:[^{;]*)?\{"
    )
    m = rx.search(text)
    if not m:
        raise LookupError(f"definition of {name} not found")
    kind = m.group(1)
    bases = []
    if m.group(2):
        for part in split_top_level(m.group(2)[1:], ","):
            part = re.sub(r"\b(public|protected|private|virtual)\b", " ", part).strip()
            if part:
                bases.append(re.sub(r"\s+", "", part))
    open_idx = m.end() - 1
    close_idx = match_close(text, open_idx, "{", "}")
    return kind, bases, text[open_idx + 1 : close_idx]


def split_top_level(s: str, sep: str, angle: bool = True):
    opens, closes = ("([{<", ")]}>") if angle else ("([{", ")]}")
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in opens:
            depth += 1
        elif ch in closes:
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


# Macros that stand alone in a class body (no trailing ';' required); handled before
# the generic macro stripping.
PROPERTY_RE = re.compile(r"\bQ_(?:PRIVATE_)?PROPERTY\s*\(")
FLAGS_RE = re.compile(r"\bQ_DECLARE_FLAGS\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)")
REGISTERED_RE = re.compile(r"\bQ_(ENUM|ENUMS|FLAG|FLAGS)\s*\(([^)]*)\)")

# Per-declaration marker macros we want to keep as facts.
MARKERS = {
    "Q_INVOKABLE": "__INVOKABLE__",
    "Q_SLOT": "__SLOT__",
    "Q_SIGNAL": "__SIGNAL__",
}
DEPRECATION_MACRO_RE = re.compile(r"^(QT_DEPRECATED\w*|Q_DECL_DEPRECATED\w*|Q_DECL_ENUMERATOR_DEPRECATED\w*)$")
MACRO_TOKEN_RE = re.compile(r"\b(Q|QT|QDOC|QVTK|CTK|QMRML)_[A-Z0-9_]*\b")

PROPERTY_KEYWORDS = (
    "READ WRITE MEMBER RESET NOTIFY REVISION DESIGNABLE SCRIPTABLE STORED USER CONSTANT FINAL REQUIRED".split()
)


def parse_property(args: str, private: bool):
    """(name, info) from the argument text of Q_PROPERTY(type name READ ...)."""
    if private:  # Q_PRIVATE_PROPERTY(d_func(), type name READ ...)
        args = split_top_level(args, ",", angle=False)[1] if "," in args else args
    kwpos = len(args)
    for kw in PROPERTY_KEYWORDS:
        mm = re.search(rf"\b{kw}\b", args)
        if mm:
            kwpos = min(kwpos, mm.start())
    head = args[:kwpos].strip()
    mm = re.search(r"([A-Za-z_]\w*)\s*$", head)
    name = mm.group(1)
    info = {"type": re.sub(r"\s+", " ", head[: mm.start()]).strip()}
    for kw in ("READ", "WRITE", "MEMBER", "RESET", "NOTIFY"):
        mm = re.search(rf"\b{kw}\s+(\w+)", args)
        if mm:
            info[kw.lower()] = mm.group(1)
    if re.search(r"\bCONSTANT\b", args):
        info["constant"] = True
    return name, info


def preprocess_body(body: str, facts: dict) -> str:
    # Q_PROPERTY / Q_PRIVATE_PROPERTY
    while True:
        m = PROPERTY_RE.search(body)
        if not m:
            break
        open_idx = m.end() - 1
        close_idx = match_close(body, open_idx, "(", ")")
        name, info = parse_property(body[open_idx + 1 : close_idx], "PRIVATE" in m.group(0))
        old = facts["property_info"].get(name)
        if old and old["type"] != info["type"]:  # e.g. two #if branches with different types
            types = sorted(set(old["type"].split(" | ")) | {info["type"]})
            info["type"] = " | ".join(types)
        facts["property_info"][name] = info
        body = body[: m.start()] + " " + body[close_idx + 1 :]
    for m in FLAGS_RE.finditer(body):
        facts["flags"][m.group(1)] = m.group(2)
    body = FLAGS_RE.sub(" ", body)
    for m in REGISTERED_RE.finditer(body):
        for tok in re.findall(r"\w+", m.group(2)):
            facts["registered_enums"].add(tok)
    body = REGISTERED_RE.sub(" ", body)
    # Access-label spellings.
    body = re.sub(r"\bQ_SLOTS\b", "slots", body)
    body = re.sub(r"\bQ_SIGNALS\b", "signals", body)

    # Remaining Q_*/QT_*/... macros: keep markers, strip the rest (with their arguments).
    out = []
    pos = 0
    for m in MACRO_TOKEN_RE.finditer(body):
        if m.start() < pos:
            continue
        tok = m.group(0)
        out.append(body[pos : m.start()])
        end = m.end()
        k = end
        while k < len(body) and body[k] in " \t\n":
            k += 1
        has_args = k < len(body) and body[k] == "("
        if tok in MARKERS:
            out.append(f" {MARKERS[tok]} ")
        elif DEPRECATION_MACRO_RE.match(tok):
            out.append(" __DEPRECATED__ ")
            if has_args:
                end = match_close(body, k, "(", ")") + 1
        else:
            out.append(" ")
            if has_args:
                end = match_close(body, k, "(", ")") + 1
        pos = end
    out.append(body[pos:])
    body = "".join(out)
    body = re.sub(r"\[\[.*?\]\]", " ", body)  # C++ attributes
    return body


LABEL_RE = re.compile(r"^(public|protected|private)(\s+slots)?$|^(signals)$")
NESTED_RE = re.compile(r"^(?:template\s*<.*>\s*)?(class|struct|union)\b")
ENUM_RE = re.compile(r"^enum\b(?:\s+(?:class|struct))?\s*(\w+)?")
CPP_KEYWORDS = set(
    "alignas alignof decltype sizeof noexcept typeid static_cast const_cast reinterpret_cast "
    "dynamic_cast return if for while switch new delete".split()
)


def split_body(body: str, default_access: str):
    """Yield (access, kind, text, enum_body) for each top-level item of a class body.

    kind: "decl" (a ;-terminated declaration or a function with inline body),
          "enum", "nested".
    The marker tokens __DEPR_BEGIN__/__DEPR_END__ are yielded as kind "depr".
    """
    access = default_access
    buf = []
    i, n = 0, len(body)
    paren = 0
    while i < n:
        ch = body[i]
        if paren == 0 and body.startswith("__DEPR_", i):
            m = re.match(r"__DEPR_(BEGIN|END)__", body[i:])
            yield access, "depr", m.group(1), None
            i += m.end()
            continue
        if ch == "(":
            paren += 1
        elif ch == ")":
            paren -= 1
        if paren > 0:
            if ch == "{":  # e.g. lambda or brace-init in a default argument
                j = match_close(body, i, "{", "}")
                buf.append(body[i : j + 1])
                i = j + 1
                continue
            buf.append(ch)
            i += 1
            continue
        if ch == ":" and body[i + 1 : i + 2] != ":" and body[i - 1 : i] != ":":
            label = re.sub(r"\s+", " ", "".join(buf)).strip()
            if LABEL_RE.match(label):
                access = label
                buf = []
                i += 1
                continue
        if ch == ";":
            text = " ".join("".join(buf).split())
            if text:
                yield access, "decl", text, None
            buf = []
            i += 1
            continue
        if ch == "{":
            j = match_close(body, i, "{", "}")
            head = " ".join("".join(buf).split())
            head_nomark = re.sub(r"__\w+__", " ", head).strip()
            if ENUM_RE.match(head_nomark):
                yield access, "enum", head_nomark, body[i + 1 : j]
                # skip to the terminating ';'
                k = body.find(";", j)
                i = (k + 1) if k >= 0 else j + 1
                buf = []
                continue
            if NESTED_RE.match(head_nomark) or re.match(r"^(typedef\s+)?(class|struct|union)\b", head_nomark):
                yield access, "nested", head_nomark, None
                k = body.find(";", j)
                i = (k + 1) if k >= 0 else j + 1
                buf = []
                continue
            # Function with an inline body (or a brace-initialised data member).
            if head:
                yield access, "decl", head, None
            buf = []
            i = j + 1
            continue
        buf.append(ch)
        i += 1
    rest = " ".join("".join(buf).split())
    if rest:
        yield access, "decl", rest, None


def declared_name(decl: str):
    """Return (name, reason) for a declaration; name None when it is not a member function.

    reason is one of: "function", "operator", "field", "skip:<why>", "unparsed".
    """
    d = decl.strip()
    d = re.sub(r"^(__\w+__\s*)+", "", d)
    m = re.match(r"^template\s*<", d)
    if m:
        close = match_close_angle(d, m.end() - 1)
        d = d[close + 1 :].strip()
        d = re.sub(r"^(__\w+__\s*)+", "", d)
    first = re.match(r"\w+", d)
    if first and first.group(0) in ("friend", "typedef", "using", "class", "struct", "union", "enum"):
        return None, "skip:" + first.group(0)
    if re.search(r"\boperator\b", d):
        return None, "operator"
    # First '(' at angle-bracket depth 0.
    depth = 0
    k = 0
    while k < len(d):
        ch = d[k]
        if ch == "<" and d[k + 1 : k + 2] not in ("=", "<"):
            depth += 1
        elif ch == ">" and d[k - 1] != "-" and d[k + 1 : k + 2] != "=":
            depth -= 1
        elif ch == "(":
            if depth == 0:
                break
            k = match_close(d, k, "(", ")")
        k += 1
    if k >= len(d):
        names = re.findall(r"[A-Za-z_]\w*", re.split(r"[=\[{]", d)[0])
        return (names[-1] if names else None), "field"
    m = re.search(r"(~?\s*[A-Za-z_]\w*)\s*$", d[:k])
    if not m:
        return None, "unparsed"
    name = m.group(1).replace(" ", "")
    if name in CPP_KEYWORDS:
        return None, "unparsed"
    return name, "function"


def parse_enum(head: str, body: str, facts: dict):
    m = ENUM_RE.match(head)
    name = m.group(1) if m else None
    body = re.sub(r"__\w+__", " ", body)
    values = []
    for part in split_top_level(body, ",", angle=False):
        mm = re.match(r"\s*([A-Za-z_]\w*)", part)
        if mm:
            values.append(mm.group(1))
    return name or "<anonymous>", values


def parse_class(text: str, name: str):
    text = drop_preprocessor(strip_comments_and_strings(text))
    kind, bases, body = find_class(text, name)
    facts = {
        "property_info": {},
        "flags": {},
        "registered_enums": set(),
        "signals": set(),
        "slots": set(),
        "invokables": set(),
        "methods": set(),
        "static_methods": set(),
        "deprecated": set(),  # names with a deprecated declaration ...
        "not_deprecated": set(),  # ... and names with a non-deprecated one
        "enums": {},
        "public_fields": set(),
        "unclassified": [],
    }
    body = preprocess_body(body, facts)
    in_depr = False
    for access, item, decl, enum_body in split_body(body, "public" if kind == "struct" else "private"):
        if item == "depr":
            in_depr = decl == "BEGIN"
            continue
        public = access.startswith("public") or access == "signals"
        if item == "enum":
            if public:
                ename, values = parse_enum(decl, enum_body, facts)
                facts["enums"][ename] = sorted(set(facts["enums"].get(ename, [])) | set(values))
            continue
        if item == "nested" or not public:
            continue
        mname, reason = declared_name(decl)
        if reason == "field":
            if mname:
                facts["public_fields"].add(mname)
            else:
                facts["unclassified"].append(decl)
            continue
        if mname is None:
            if reason == "unparsed":
                facts["unclassified"].append(decl)
            continue
        if mname == name or mname.startswith("~"):
            continue  # constructor / destructor
        if re.search(r"=\s*delete\s*$", decl):
            continue
        is_static = re.search(r"(^|\s)static\s", re.sub(r"__\w+__", " ", decl)) is not None
        if "__DEPRECATED__" in decl or in_depr:
            facts["deprecated"].add(mname)
        else:
            facts["not_deprecated"].add(mname)
        if access == "signals" or "__SIGNAL__" in decl:
            facts["signals"].add(mname)
        elif access == "public slots" or "__SLOT__" in decl:
            facts["slots"].add(mname)
        else:
            facts["methods"].add(mname)
            if is_static:
                facts["static_methods"].add(mname)
            if "__INVOKABLE__" in decl:
                facts["invokables"].add(mname)
    return bases, facts


# --------------------------------------------------------------------------- driver


def git_show(repo: str, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def git_rev(repo: str, ref: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, "rev-parse", ref + "^{commit}"], check=True, capture_output=True, text=True
    ).stdout.strip()


def build_entry(header, source, python, bases, facts):
    props = sorted(facts["property_info"])
    entry = {
        "header": header,
        "source": source,
        "bases": bases,
        "python": python,
        "properties": props,
        "property_info": {k: facts["property_info"][k] for k in props},
        "signals": sorted(facts["signals"]),
        "slots": sorted(facts["slots"]),
        "invokables": sorted(facts["invokables"]),
        "methods": sorted(facts["methods"]),
        "static_methods": sorted(facts["static_methods"]),
        "deprecated": sorted(facts["deprecated"] - facts["not_deprecated"]),
        "enums": {k: v for k, v in sorted(facts["enums"].items())},
        "flags": dict(sorted(facts["flags"].items())),
    }
    if facts["public_fields"]:
        entry["public_fields"] = sorted(facts["public_fields"])
    if python == "qt-wrapper":
        visible = set(props) | facts["signals"] | facts["slots"] | facts["methods"]
    else:
        visible = set(props) | facts["signals"] | facts["slots"] | facts["invokables"]
    entry["python_visible"] = sorted(visible)
    if facts["unclassified"]:
        entry["unclassified"] = sorted(set(facts["unclassified"]))
    return entry


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slicer-repo", default=DEFAULT_SLICER_REPO)
    ap.add_argument("--slicer-ref", default=DEFAULT_SLICER_REF)
    ap.add_argument("--ctk-repo", default=DEFAULT_CTK_REPO)
    ap.add_argument("--ctk-ref", default=DEFAULT_CTK_REF)
    ap.add_argument("--qt-include", default=DEFAULT_QT_INCLUDE)
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)

    slicer_sha = git_rev(args.slicer_repo, args.slicer_ref)
    ctk_sha = git_rev(args.ctk_repo, args.ctk_ref)

    jobs = []
    for name, path in SLICER_CLASSES:
        jobs.append(
            (
                name,
                path,
                f"Slicer {args.slicer_ref}",
                "decorators-only",
                lambda p=path: git_show(args.slicer_repo, args.slicer_ref, p),
            )
        )
    for name, path in CTK_CLASSES:
        jobs.append(
            (name, path, f"CTK {ctk_sha}", "decorators-only", lambda p=path: git_show(args.ctk_repo, args.ctk_ref, p))
        )
    for name, path in QT_CLASSES:

        def read_qt(p=path):
            with open(os.path.join(args.qt_include, p), encoding="utf-8") as fh:
                return fh.read()

        jobs.append((name, path, QT_SOURCE, "qt-wrapper", read_qt))

    result = {
        "_about": {
            "description": " ".join(
                [
                    "Member-name facts extracted from C++ headers, for strict test fakes. Per class:",
                    "'properties' = Q_PROPERTY/Q_PRIVATE_PROPERTY names (property_info: type/read/write/notify);",
                    "'signals'; 'slots' = public slots; 'methods' = other public member functions, incl. static",
                    "and Q_INVOKABLE ones ('invokables' = the Q_INVOKABLE subset, 'static_methods' = the static",
                    "subset); 'enums' = public enums -> enumerators; 'flags' = Q_DECLARE_FLAGS name -> enum;",
                    "'deprecated' = members all of whose declarations carry a deprecation macro or sit inside",
                    "#if QT_DEPRECATED_SINCE (they are still declared in these headers); 'python_visible' = names",
                    "reachable from Python on this class itself (inherited members come from 'bases').",
                    "Only names are kept (overloads collapse); constructors, destructors, operators, nested types",
                    "and non-public members are skipped; both branches of every #if are kept; members generated by",
                    "Q_OBJECT (metaObject, staticMetaObject, tr of subclasses) are not listed.",
                ]
            ),
            "python": {
                "qt-wrapper": " ".join(
                    [
                        "Qt's own classes: PythonQt's generated wrappers expose public methods, plus Q_PROPERTYs",
                        "as attributes, signals and slots. python_visible = properties+signals+slots+methods.",
                    ]
                ),
                "decorators-only": " ".join(
                    [
                        "ctk*/qMRML* classes: CTK's CMake/ctkWrapPythonQt.py generates only constructor/destructor",
                        "decorators, so only Q_PROPERTYs, signals, public slots and Q_INVOKABLE methods are",
                        "reachable from Python (plain public C++ methods are not).",
                        "python_visible = properties+signals+slots+invokables.",
                        "Inherited Qt members are reachable through the Qt wrappers.",
                    ]
                ),
            },
            "command": " ".join(
                [
                    "python3 Testing/slicer_fakes/extract_api_facts.py",
                    f"--slicer-repo {args.slicer_repo} --slicer-ref {args.slicer_ref}",
                    f"--ctk-repo {args.ctk_repo} --ctk-ref {args.ctk_ref}",
                    f"--qt-include {args.qt_include}",
                ]
            ),
            "sources": {
                "slicer": f"Slicer {args.slicer_ref} (commit {slicer_sha}), read with git show",
                "ctk": f"CTK commit {ctk_sha} (the CTK that Slicer v5.10.0 builds, SuperBuild/External_CTK.cmake)",
                "qt": QT_SOURCE + ", headers under usr/include/x86_64-linux-gnu/qt5/",
            },
            "generator": "Testing/slicer_fakes/extract_api_facts.py",
        }
    }
    problems = []
    for name, path, source, python, read in jobs:
        bases, facts = parse_class(read(), name)
        entry = build_entry(path, source, python, bases, facts)
        result[name] = entry
        for u in entry.get("unclassified", []):
            problems.append(f"{name}: unclassified declaration: {u}")
    for name, entry in result.items():
        if name.startswith("_"):
            continue
        for base in entry["bases"]:
            if base not in result:
                problems.append(f"{name}: base {base} not extracted")
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
        fh.write("\n")
    nclasses = len(result) - 1
    nmembers = sum(len(e["python_visible"]) for k, e in result.items() if not k.startswith("_"))
    print(f"wrote {args.output}: {nclasses} classes, {nmembers} python-visible own members")
    for p in problems:
        print("NOTE: " + p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
