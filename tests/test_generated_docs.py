"""docs/cli.md and docs/recipe-reference.md are generated; they must match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tool", ["gen_cli_docs.py", "gen_recipe_docs.py"])
def test_generated_docs_are_current(tool):
    result = subprocess.run([sys.executable, str(REPO / "tools" / tool), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, f"{result.stderr.strip()} (regenerate: python tools/{tool})"
