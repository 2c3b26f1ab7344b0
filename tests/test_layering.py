"""Dependency direction around the fixture package ``ascend.tiny`` (DESIGN.md): the fixtures
use the stages' code and the smoke suite's requests, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ascend

PACKAGE = Path(ascend.__file__).parent


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    """Modules a file imports: everywhere, or only in statements that run at import time."""
    tree = ast.parse(path.read_text())
    if module_level_only:  # top-level statements, including those under if/try, not function bodies
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
    else:
        nodes = list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _offenders(package: str, prefixes: tuple[str, ...], *, module_level_only: bool) -> list[str]:
    return sorted(f"{f.relative_to(PACKAGE)}: {m}" for f in (PACKAGE / package).rglob("*.py")
                  for m in _imports(f, module_level_only=module_level_only) if m.startswith(prefixes))


@pytest.mark.parametrize("package", ["smoke", "reference"])
def test_no_import_of_the_fixtures(package):
    assert _offenders(package, ("ascend.tiny", "ascend.tiny.configs", "ascend.tiny.writer",
                                "ascend.tiny.scripted"), module_level_only=False) == []


def test_models_import_the_fixtures_lazily_only():
    """``models.catalog`` may import ``tiny_config`` inside a function (``model.source: tiny``)."""
    assert _offenders("models", ("ascend.tiny",), module_level_only=True) == []
