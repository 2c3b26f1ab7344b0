"""Fixtures of the conversion tests (helpers live in convert_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from convert_fixtures import make_checkpoint


@pytest.fixture(scope="session")
def ckpt_factory(tmp_path_factory):
    """make(family, fp8=..., ...) -> cached source dir (built once per session and options)."""
    cache: dict = {}

    def make(family: str, **kw) -> Path:
        key = (family, tuple(sorted(kw.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp(f"src-{family}{'-fp8' if kw.get('fp8') else ''}")
            cache[key] = make_checkpoint(d, family, **kw)
        return cache[key]

    return make
