"""ascend-xllm-cpu accepts exactly the flags of the xLLM version it stands in for (xLLM's own tables)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ascend.serve.cpu_engine.flags import FlagError, parse_flags
from ascend.serve.xllm_flags import xllm_version


@pytest.mark.parametrize("version,flag", [
    ("main", "--device_id=0"),  # xLLM-AI main removed --device_id and --devices
    ("0.9", "--graph_decode_batch_size_limit=4"),  # v0.10.x spelling
    ("0.10", "--acl_graph_decode_batch_size_limit=4"),  # v0.9.1 / main spelling
    ("0.10", "--enable_mega_moe=true"),  # added on xLLM-AI main
])
def test_a_flag_of_another_version_is_rejected(version, flag):
    with pytest.raises(FlagError, match="unknown command line flag"):
        parse_flags(["--model=/m", flag], xllm_version(version))
    other = next(v for v in ("0.9.1", "0.10", "main") if xllm_version(v).has(flag[2:].split("=")[0]))
    assert parse_flags(["--model=/m", flag], xllm_version(other))["_given"] >= {flag[2:].split("=")[0]}


def test_the_engine_process_takes_its_version_from_the_environment():
    """The real entry point: the same argv is fatal under one version, accepted (past flag parsing) by another."""
    argv = [sys.executable, "-m", "ascend.serve.cpu_engine.main", "--model=/nonexistent", "--device_id=0"]
    main = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={"ASCEND_XLLM_VERSION": "main",
                                                                                  "PATH": "/usr/bin:/bin"})
    assert main.returncode != 0 and "unknown command line flag 'device_id'" in main.stderr
    v010 = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={"ASCEND_XLLM_VERSION": "0.10",
                                                                                  "PATH": "/usr/bin:/bin"})
    assert "unknown command line flag" not in v010.stderr


def test_generated_cpu_commands_name_the_version():
    from ascend.recipe import load_recipe
    from ascend.serve.xllm import build_deployment

    dep = build_deployment(load_recipe("tiny/glm5-cpu", ['serve.version="0.9.1"']))
    assert all(r.env["ASCEND_XLLM_VERSION"] == "0.9.1" for r in dep.ranks)
    for r in dep.ranks:  # and the engine of that version parses them
        parse_flags(r.argv[1:], xllm_version("0.9.1"))


def test_generated_cpu_commands_carry_the_served_max_model_len():
    """The CPU engine enforces serve.max_model_len (xLLM has no flag; the generator passes it in the environment)."""
    from ascend.recipe import load_recipe
    from ascend.serve.xllm import build_deployment

    dep = build_deployment(load_recipe("tiny/glm5-cpu", ["serve.max_model_len=300"]))
    assert {r.env["ASCEND_XLLM_CPU_MAX_MODEL_LEN"] for r in dep.ranks} == {"300"}
