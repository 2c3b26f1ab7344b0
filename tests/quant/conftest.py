"""Fixtures for the calibration tests (tiny checkpoints: ``tiny_dir`` in tests/conftest.py): a small,
fast calibration config (every gate threshold off unless a test sets one)."""

from __future__ import annotations

import pytest


@pytest.fixture
def small_cfg():
    """``small_cfg(**overrides)`` -> a CalibrationSection with 9 samples of <= 24 tokens, gate off."""
    from ascend.recipe.schema import CalibrationSection

    def make(**kw):
        off = {"layer_rel_l2": None, "logits_kl": None, "top1": None, "logits_rel_err": None}
        return CalibrationSection(**{"samples": 9, "max_len": 24, "thresholds": off, **kw})

    return make
