"""Chip profiles carry the documented facts (ascend-ops.md §3 and §5)."""

from __future__ import annotations

import pytest

from ascend.errors import PlanError
from ascend.hardware import CHIPS, GiB, chip_profile


def test_documented_memory_and_node_shape():
    # ascend-ops.md §5: A2 64 GB × 8 NPUs; A3 16 dies × 64 GB; Ascend 950DT 96 GB × 8
    a2, a3, a5 = chip_profile("ascend-910b"), chip_profile("ascend-a3"), chip_profile("ascend-950")
    assert (a2.memory_bytes, a2.devices_per_node) == (64 * GiB, 8)
    assert (a3.memory_bytes, a3.devices_per_node) == (64 * GiB, 16)
    assert (a5.memory_bytes, a5.devices_per_node) == (96 * GiB, 8)


def test_fp8_only_on_950():
    # ascend-ops.md §3: no FP8 compute on Atlas A2 / A3; FP8 (W8A8FP8, MXFP8) on Ascend 950
    assert not chip_profile("ascend-910b").supports("fp8")
    assert not chip_profile("ascend-a3").supports("fp8")
    assert chip_profile("ascend-950").supports("fp8")
    assert all(chip_profile(c).supports("bf16") and chip_profile(c).supports("w8a8") for c in CHIPS)


def test_cpu_shares_host_ram_between_ranks():
    one, four = chip_profile("cpu", ranks_per_node=1), chip_profile("cpu", ranks_per_node=4)
    assert one.memory_bytes > 0 and four.memory_bytes == one.memory_bytes // 4
    assert one.collective == "gloo"


def test_unknown_chip_suggests():
    with pytest.raises(PlanError) as err:
        chip_profile("ascend-a2")
    assert "unknown chip 'ascend-a2'" in err.value.line() and "did you mean" in err.value.line()
    assert err.value.exit_code == 2
