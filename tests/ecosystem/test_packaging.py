"""Packaging: every third-party module the package imports is a declared dependency (or an extra's), the
numcodecs entry point and py.typed are declared, and the changelog is where the format's docs point."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")     # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _req_names(req: str) -> set[str]:
    """The distribution a requirement names, plus its bracketed extras (``dask[distributed]`` brings
    ``distributed``)."""
    name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]
    extras = re.search(r"\[([^\]]*)\]", req)
    names = {name} | ({e.strip() for e in extras.group(1).split(",")} if extras else set())
    return {n.lower().replace("_", "-") for n in names if n}


def _imports(path: Path) -> set[str]:
    """Top-level names of the modules a file imports (absolute imports only), docstrings excluded."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_every_imported_distribution_is_declared():
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    used: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            used |= _imports(path)
    third_party = {m for m in used if m not in sys.stdlib_module_names and m not in ("inrv", "__future__")}
    declared = {n for r in PROJECT["dependencies"] for n in _req_names(r)}
    extras = {n for reqs in PROJECT["optional-dependencies"].values() for r in reqs for n in _req_names(r)}
    dists = metadata.packages_distributions()
    missing = []
    for module in sorted(third_party):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & (declared | extras):
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_entry_point_typed_marker_and_metadata():
    assert PROJECT["entry-points"]["numcodecs.codecs"]["inrv"] == "inrv.numcodecs:Inrv"
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["inrv"]
    assert (ROOT / "inrv" / "py.typed").exists()
    for key in ("authors", "classifiers", "urls", "license", "readme", "requires-python"):
        assert PROJECT.get(key), key
    assert {"zarr", "plot", "docs"} <= set(PROJECT["optional-dependencies"])
    eps = metadata.entry_points(group="numcodecs.codecs")
    assert any(ep.name == "inrv" and ep.value == "inrv.numcodecs:Inrv" for ep in eps)   # the installed package


def test_changelog_and_citation_are_where_the_docs_say():
    assert "changelog.md" in (ROOT / "docs" / "format.md").read_text(encoding="utf-8")
    assert (ROOT / "docs" / "changelog.md").read_text(encoding="utf-8").strip() == '--8<-- "CHANGELOG.md"'
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "format **1.0**" in changelog
    cff = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert "cff-version: 1.2.0" in cff and "10.1371/journal.pone.0314944" in cff
