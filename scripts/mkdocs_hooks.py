"""mkdocs hook: lay out the import package ``inrv`` for the API reference (mkdocstrings reads source, statically).

The package's subpackages live in top-level folders (``codec/`` is ``inrv.codec``: ``package-dir`` in
pyproject.toml), which a static reader cannot guess. Before the build, ``build/api-src/inrv`` is made of copies
of the source files (links would be resolved back to the real folders), following pyproject.toml's mapping,
and mkdocs.yml points mkdocstrings there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "api-src"


def lay_out() -> None:
    """Copy the package into ``build/api-src`` following pyproject's ``package-dir``."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    if TREE.exists():
        shutil.rmtree(TREE)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, folder in sorted(mapping.items()):      # "inrv" first, then its subpackages inside it
        shutil.copytree(ROOT / folder, TREE.joinpath(*name.split(".")), ignore=skip, dirs_exist_ok=True)


def on_config(config, **kwargs):
    lay_out()
    return config


if __name__ == "__main__":
    # scripts/docs.sh lays the tree out before mkdocs starts: mkdocstrings drops a search path that does not
    # exist yet when the configuration is read, and would then resolve `inrv` from the installed package
    lay_out()
