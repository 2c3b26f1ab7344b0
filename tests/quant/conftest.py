"""Fixtures for the calibration tests: tiny checkpoints built once per session, and a small,
fast calibration config (every gate threshold off unless a test sets one)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(family, **kw)`` -> path of an ``ascend tiny`` checkpoint (cached per session)."""
    from ascend.tiny.writer import write_tiny_checkpoint

    cache: dict = {}

    def make(family: str, **kw):
        key = (family, tuple(sorted(kw.items())))
        if key not in cache:
            name = "-".join([family] + [f"{k}{v}" for k, v in sorted(kw.items())])
            cache[key] = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / name, family, **kw)
        return cache[key]

    return make


@pytest.fixture
def small_cfg():
    """``small_cfg(**overrides)`` -> a CalibrationSection with 9 samples of <= 24 tokens, gate off."""
    from ascend.recipe.schema import CalibrationSection

    def make(**kw):
        off = {"layer_rel_l2": None, "logits_kl": None, "top1": None, "logits_rel_err": None}
        return CalibrationSection(**{"samples": 9, "max_len": 24, "thresholds": off, **kw})

    return make
