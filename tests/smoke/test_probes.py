"""The smoke suite owns its requests: it imports no fixture, and the fixture designed to answer
it (the scripted tiny checkpoint) reads the suite's requests, not a copy."""

from __future__ import annotations

import ast
from pathlib import Path

import ascend.smoke
from ascend.smoke import probes

FIXTURE_PACKAGES = ("ascend.tiny", "ascend.reference", "ascend.models.tiny")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_smoke_imports_no_fixture():
    smoke_dir = Path(ascend.smoke.__file__).parent
    offenders = {
        f"{f.name}: {m}"
        for f in sorted(smoke_dir.glob("*.py"))
        for m in _imports(f)
        if m.startswith(FIXTURE_PACKAGES)
    }
    assert offenders == set()


def test_scripted_fixture_is_designed_against_the_suite_requests():
    from ascend.tiny import scripted

    assert scripted.Conversation is probes.Conversation
    assert scripted.WEATHER_TOOL_NAME == probes.WEATHER_TOOL["function"]["name"]
    assert scripted.TIME_TOOL_NAME == probes.TIME_TOOL["function"]["name"]
    kinds = {c.expect for c in probes.probe_conversations()}
    assert kinds == set(scripted.CATEGORIES)  # every kind of answer the fixture can give is asked for
