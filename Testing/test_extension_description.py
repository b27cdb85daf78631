"""The extension description ``SegUncertainty.json``: the entry submitted to the Slicer Extensions Index.

It is validated against a copy of the Index's catalog-entry schema,
``Testing/data/slicer-extension-catalog-entry-schema-v1.0.2.json``: a byte copy of
``schemas/slicer-extension-catalog-entry-schema-v1.0.2.json`` of the repository Slicer/ExtensionsIndex at
commit 07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c (identical to ``Schemas/`` of the same name in
Slicer/Slicer, where the entry's ``$schema`` URL points). The Index's pre-commit hook validates every entry
against that file, and its checker (``scripts/check_description_files.py``) against the schema the
``$schema`` URL names.

The other tests check the entry against the top-level CMakeLists.txt (the Index's submission checklist
asks for the two to agree) and the rules of ``scripts/check_description_files.py`` that need no network.
Not checked here: that the GitHub repository has the ``3d-slicer-extension`` topic and that the icon and
screenshot URLs download as images (online checks of the Index), and the Index's repository-name rule
(``check_git_repository_name``: the repository name should start with ``Slicer``), which
``SegUncertainty`` does not meet.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_FILE = ROOT / "SegUncertainty.json"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "slicer-extension-catalog-entry-schema-v1.0.2.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
ENTRY = json.loads(ENTRY_FILE.read_text())
CMAKE = (ROOT / "CMakeLists.txt").read_text()
IMAGE_SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".gif": b"GIF8"}


def cmake_value(name: str) -> str:
    """The value of ``set(NAME "value")`` in the top-level CMakeLists.txt, without the quotes."""
    match = re.search(rf'set\s*\(\s*{name}\s+"([^"]*)"\s*\)', CMAKE)
    assert match, f"{name} is not set to a quoted value"
    return match.group(1)


def github_repository(url: str) -> tuple[str, str]:
    """(owner, name) of a github.com repository URL, with or without ``.git``."""
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "github.com", url
    path = parts.path.strip("/").removesuffix(".git").split("/")
    assert len(path) == 2 and all(path), url
    return path[0], path[1]


def raw_file(url: str) -> tuple[str, str, str, str]:
    """(owner, name, revision, path) of a raw.githubusercontent.com file URL."""
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "raw.githubusercontent.com", url
    owner, name, revision, path = parts.path.lstrip("/").split("/", 3)
    return owner, name, revision, path


def image_urls() -> list[str]:
    return [cmake_value("EXTENSION_ICONURL"), *cmake_value("EXTENSION_SCREENSHOTURLS").split()]


def test_the_schema_copy_is_the_catalog_entry_schema_v1_0_2():
    assert SCHEMA["$id"] == (
        "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
    )
    assert jsonschema.validators.validator_for(SCHEMA) is jsonschema.Draft7Validator
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_the_entry_validates_against_the_schema_it_names():
    # the checker strips the fragment of $schema and downloads that URL: it must name the copy's schema
    assert ENTRY["$schema"].split("#")[0] == SCHEMA["$id"].split("#")[0]
    assert ENTRY["$schema"].endswith(f"/{SCHEMA_FILE.name}#")  # the form the Index's entries use
    jsonschema.validate(ENTRY, SCHEMA)
    assert set(ENTRY) >= {"$schema", "category", "scm_url", "scm_revision", "build_dependencies"}
    assert ENTRY["scm_revision"] == "main" and ENTRY["enabled"] is True
    assert ENTRY["tier"] == 1  # experimental: a new extension; the Index's maintainers assign the tier


def without(key: str):
    def change(entry: dict) -> None:
        del entry[key]

    return change


def setting(key: str, value):
    def change(entry: dict) -> None:
        entry[key] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        without("category"),
        without("scm_url"),
        without("$schema"),
        setting("scmurl", "https://github.com/seguncertainty/SegUncertainty.git"),  # unknown key (the old spelling)
        setting("category", ["Segmentation"]),
        setting("build_dependencies", "PyTorch"),
        setting("build_dependencies", [1]),
        setting("scm_type", "svn"),
        setting("tier", 0),
        setting("tier", 6),
        setting("tier", "1"),
        setting("enabled", "yes"),
    ],
    ids=[
        "no-category",
        "no-scm_url",
        "no-$schema",
        "unknown-key",
        "category-not-a-string",
        "dependencies-not-a-list",
        "dependency-not-a-string",
        "unknown-scm_type",
        "tier-below-1",
        "tier-above-5",
        "tier-not-an-integer",
        "enabled-not-a-boolean",
    ],
)
def test_a_broken_entry_is_rejected(change):
    broken = copy.deepcopy(ENTRY)
    change(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_the_entry_agrees_with_the_cmake_metadata():
    homepage = cmake_value("EXTENSION_HOMEPAGE")
    repository = github_repository(ENTRY["scm_url"])
    assert repository == github_repository(homepage)
    assert ENTRY["category"] == cmake_value("EXTENSION_CATEGORY")
    assert ENTRY["build_dependencies"] == cmake_value("EXTENSION_DEPENDS").split()
    # the icon and the screenshots are raw files of the same repository at the revision the Index builds
    for url in image_urls():
        owner, name, revision, path = raw_file(url)
        assert (owner, name) == repository, url
        assert revision == ENTRY["scm_revision"], url
        assert (ROOT / path).is_file(), url


def test_the_entry_meets_the_offline_rules_of_the_index_checker():
    """Rules of scripts/check_description_files.py (and the Index's pre-commit hooks) that need no network."""
    extension_name = ENTRY_FILE.stem
    raw = ENTRY_FILE.read_bytes()
    # check_json_file_format: LF line endings only; pre-commit: no tabs, no trailing spaces, a final newline
    assert b"\r" not in raw and b"\t" not in raw
    assert raw.endswith(b"}\n") and not re.search(rb"[ \t]+\n", raw)
    # check_extension_name: the extension name should not start with "Slicer"
    assert not extension_name.lower().startswith("slicer")
    # check_category: "Segmentation" is in ACCEPTED_EXTENSION_CATEGORIES
    assert ENTRY["category"] == "Segmentation"
    # check_scm_url_syntax: scheme://host/path with scheme git or https
    assert "://" in ENTRY["scm_url"] and urlsplit(ENTRY["scm_url"]).scheme in ("git", "https")
    # check_cmakelists_content: the first project() name is the name of the description file ...
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", CMAKE, flags=re.IGNORECASE)
    assert project and project[0].strip("\"'") == extension_name
    # ... and the icon and screenshot URLs are set (quoted), start with http and name images
    assert re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', CMAKE, flags=re.IGNORECASE)
    assert re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', CMAKE, flags=re.IGNORECASE)
    for url in image_urls():
        assert url.startswith("http"), url
        suffix = Path(urlsplit(url).path).suffix.lower()
        assert suffix in IMAGE_SIGNATURES, url
        assert (ROOT / raw_file(url)[3]).read_bytes().startswith(IMAGE_SIGNATURES[suffix]), url
    # check_license_file: a license file (LICENSE is one of the names it looks for) in the repository root
    assert (ROOT / "LICENSE").is_file()


def test_the_checked_out_repository_is_under_the_index_size_limit():
    """check_repository_size: the checked-out repository (tracked files; the clone adds its packed history) < 100 MB."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name for name in listed.decode().split("\0") if name]
    size = sum(f.stat().st_size for f in files if f.is_file())
    assert size < 100 * 1024 * 1024
