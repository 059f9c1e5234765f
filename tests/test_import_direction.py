"""The direction data flows in, as the code's own imports say (read with ``ast``, nothing imported).

formats -> codec -> formats: ``inrv.formats`` (files) never imports ``inrv.codec`` (models), the CLI
or torch; ``inrv.codec`` never imports ``inrv.formats`` or the CLI. Both meet at ``inrv.encoded``.
Every import counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import package -> folder (pyproject's package-dir: subpackages live in top-level folders)
PACKAGES = {"inrv.formats": ROOT / "formats", "inrv.codec": ROOT / "codec", "inrv.cli": ROOT / "cli"}
FORBIDDEN = {
    "inrv.formats": ("inrv.codec", "inrv.cli", "torch"),
    "inrv.codec": ("inrv.formats", "inrv.cli"),
}


def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package] + parts)


def imports_of(path: Path, module: str) -> list[str]:
    """Absolute names of everything ``path`` (module ``module``) imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # ``from .. import codec`` imports a module too
            out += [name] + [f"{name}.{a.name}" for a in node.names]
    return out


def _sources(package: str):
    folder = PACKAGES[package]
    return [(p, _module_name(package, folder, p)) for p in sorted(folder.rglob("*.py"))]


def _hits(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    sources = _sources(package)
    assert sources, f"no sources found for {package}"
    bad = [f"{mod} imports {name}" for path, mod in sources for name in imports_of(path, mod)
           if _hits(name, FORBIDDEN[package])]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_and_nested_imports(tmp_path):
    """The parser resolves ``..codec`` from a module and from a package, and looks inside functions."""
    f = tmp_path / "mod.py"
    f.write_text("def g():\n    from ..codec.base import Encoded\nfrom .. import cli\nimport torch.nn\n")
    names = imports_of(f, "inrv.formats.mod")
    assert "inrv.codec.base" in names and "inrv.cli" in names and "torch.nn" in names
    assert _hits("inrv.codec.base", FORBIDDEN["inrv.formats"])
    init = tmp_path / "__init__.py"
    init.write_text("from ...formats import io\n")   # from the package inrv.codec.latent
    assert "inrv.formats" in imports_of(init, "inrv.codec.latent")
    assert _hits("inrv.formats.io", FORBIDDEN["inrv.codec"])
