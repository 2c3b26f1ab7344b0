"""Fixtures for the MindSpore tests (helpers in ms_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ms_fixtures import write_tiny_hf


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """``tiny_hf(family) -> Path`` of a tiny HF checkpoint with one MTP layer (built once)."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = write_tiny_hf(tmp_path_factory.mktemp(f"hf_{family}"), family)
        return built[family]

    return get
