"""The library stays importable without Slicer, and the Slicer build lists every file."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "SegUncertaintyLib"


def test_every_library_file_is_listed_for_the_slicer_build():
    cmake = (LIB / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"^\s+([\w/]+\.(?:py|json))\s*$", cmake, flags=re.MULTILINE))
    present = {
        p.relative_to(LIB).as_posix()
        for p in LIB.rglob("*")
        if p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    }
    assert listed == present


def test_library_imports_without_slicer_qt_ctk_or_vtk():
    modules = sorted(
        "SegUncertaintyLib." + p.relative_to(LIB).with_suffix("").as_posix().replace("/", ".")
        for p in LIB.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('slicer', 'qt', 'ctk', 'vtk', 'vtkmodules')]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_package_import_is_light():
    code = "import sys, SegUncertaintyLib; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_ruff_is_clean():
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_subpackage_is_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "SegUncertaintyLib").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_cli_review_defaults_match_the_library():
    from SegUncertaintyLib import cli
    from SegUncertaintyLib.guarantees import DEFAULT_ALPHA
    from SegUncertaintyLib.review.regions import DEFAULT_THRESHOLD

    parser = cli.build_parser()
    args = parser.parse_args(["predict", "--input", "x.nrrd", "--output-dir", "out"])
    assert args.region_threshold is None and args.alpha == DEFAULT_ALPHA
    assert cli.review_settings(args).threshold is None and cli.review_settings(args).alpha == DEFAULT_ALPHA
    predict = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    (threshold,) = [a for a in predict._actions if a.dest == "region_threshold"]
    assert f"or {DEFAULT_THRESHOLD:g} for a model without" in threshold.help


def _library_imports() -> dict[str, set[str]]:
    """Module -> the library modules it imports (at the top or inside a function), from the source."""
    import ast

    modules = {}
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target, *(f"{target}.{alias.name}" for alias in node.names)]
                graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_the_library_has_no_import_circles():
    graph = _library_imports()
    reached: dict[str, set[str]] = {}

    def reach(name: str) -> set[str]:  # every module ``name`` leads to, through any chain of imports
        if name not in reached:
            reached[name] = set()
            for target in graph[name]:
                reached[name] |= {target} | reach(target)
        return reached[name]

    circles = sorted(name for name in graph if name in reach(name))
    assert not circles, f"modules that import themselves through others: {circles}"
