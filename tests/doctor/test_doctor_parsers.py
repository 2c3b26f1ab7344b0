"""Parsers against recorded, documented tool output (sources in fixtures/*/README.md)."""

from __future__ import annotations

from pathlib import Path

from ascend.doctor.parsers import (
    bracket_list,
    in_version_range,
    parse_hccn_ip,
    parse_hccn_link,
    parse_key_values,
    parse_npu_smi_info,
    release_code,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _npu_smi(path: str):
    return parse_npu_smi_info((FIXTURES / path).read_text())


def test_npu_smi_a2_eight_910b3():
    info = _npu_smi("a2-atlas800t-910b/commands/npu-smi_info.txt")
    assert info.version == "23.0.7"
    assert info.generation == "a2" and info.cards == 8 and len(info.chips) == 8
    assert {c.name for c in info.chips} == {"910B3"} and all(c.health == "OK" for c in info.chips)
    assert [c.npu for c in info.chips] == list(range(8))
    assert info.chips[0].bus_id == "0000:C1:00.0"
    assert (info.chips[0].hbm_used_mb, info.chips[0].hbm_total_mb) == (3338, 65536)
    assert info.processes == []


def test_npu_smi_a3_sixteen_dies():
    info = _npu_smi("a3-atlas800-a3/commands/npu-smi_info.txt")
    assert info.version == "24.1.rc3.7"
    assert info.generation == "a3" and info.cards == 8 and len(info.chips) == 16
    assert [c.phy_id for c in info.chips] == list(range(16))
    assert [(c.npu, c.chip) for c in info.chips[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert info.chips[1].bus_id == "0000:9F:00.0" and info.chips[1].hbm_used_mb == 3196


def test_npu_smi_processes_holding_npus():
    info = _npu_smi("npu-smi/910b4-with-processes.txt")
    assert info.generation == "a2" and len(info.chips) == 2  # "910B4-1" is an A2 910B4 variant
    assert [(p.npu, p.chip, p.pid, p.name, p.memory_mb) for p in info.processes] == [
        (0, 0, 19334, "VLLMWorker_TP", 58472),
        (1, 0, 19341, "VLLMWorker_TP", 58472),
    ]
    assert info.chips[0].hbm_used_mb == 61825


def test_version_files():
    drv = parse_key_values((FIXTURES / "a2-atlas800t-910b/root/usr/local/Ascend/driver/version.info").read_text())
    assert drv["package_version"] == "25.0.rc1.1"
    assert release_code(drv["Innerversion"]) == "V100R001C21"
    assert bracket_list(drv["compatible_version"])[-1] == "V100R001C21"
    assert bracket_list(drv["compatible_version_fw"]) == ["7.0.0,7.7.99"]
    assert in_version_range("7.7.0.1.231", "7.0.0", "7.7.99")
    assert not in_version_range("7.8.0.1.10", "7.0.0", "7.7.99")
    assert not in_version_range("6.4.0.1.0", "7.0.0", "7.7.99")


def test_hccn_outputs():
    assert parse_hccn_link("link status: UP\n") == "UP"
    assert parse_hccn_link("link status: DOWN\n") == "DOWN"
    assert parse_hccn_link("") is None
    assert parse_hccn_ip("ipaddr:192.168.100.101\nnetmask:255.255.255.0\n") == ("192.168.100.101", "255.255.255.0")
