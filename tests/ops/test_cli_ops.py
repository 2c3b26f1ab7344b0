"""`ascend ops check`: exit codes and output."""

from __future__ import annotations

import json
import sys

from ascend.ops.moe.backends import cpu


def test_check_cpu_passes_and_prints_every_op(cli):
    result = cli("ops", "check", "--dtype", "float32")
    assert result.code == 0, result.err
    for op in ("gating_topk", "init_routing", "grouped_matmul", "token_unpermute", "dynamic_quant", "expert_mlp",
               "fused_moe"):
        assert op in result.out


def test_check_json_is_only_json(cli):
    result = cli("ops", "check", "--backend", "cpu", "--json", "--dtype", "bfloat16", "--seed", "3")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] is True and report["backend"] == "cpu"
    assert {r["dtype"] for r in report["results"]} == {"bfloat16"}
    assert all(r["max_error"] <= r["tolerance"] for r in report["results"])


def test_check_npu_without_torch_npu_exits_2_with_one_line(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)
    result = cli("ops", "check", "--backend", "npu")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "torch_npu" in lines[0]


def test_check_exits_3_when_an_op_is_off(cli, monkeypatch):
    real = cpu.token_unpermute
    monkeypatch.setattr(cpu, "token_unpermute", lambda p, i, w=None: real(p, i, w) * 1.01)  # a 1% bug
    result = cli("ops", "check", "--dtype", "float32", "--json")
    assert result.code == 3
    report = json.loads(result.out)
    failed = {r["op"] for r in report["results"] if not r["ok"]}
    assert failed == {"token_unpermute", "fused_moe"}
    assert "over tolerance" in result.err


def test_check_rejects_unknown_backend_and_dtype(cli):
    assert cli("ops", "check", "--backend", "gpu").code == 2
    assert cli("ops", "check", "--dtype", "int8").code == 2
