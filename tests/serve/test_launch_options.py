"""Recipe fields from xLLM's GLM-5 guide and EPLB (issue 17): their flags per version, the node
script's steps, and the planner's count of redundant experts.

Sources: reference/deployments.md (GLM-5 W8A8 rows: --enable_schedule_overlap, --enable_graph,
the decode graph batch limit; the EPLB example), reference/xllm.md §1 (the limit's name per
version), §3.7, §3.9 (EPLB flags), §8.1 (numactl -C per rank), §8.3 (LD_PRELOAD), §2 (set_device
after a reboot).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ascend.errors import ServeError
from ascend.plan import plan_recipe
from ascend.recipe import load_recipe
from ascend.serve.xllm import build_deployment


def _dep(*sets: str, name: str = "glm5/a3-w8a8"):
    return build_deployment(load_recipe(name, list(sets)))


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].partition("=")[::2] for a in argv[1:])


GRAPH = ["serve.graph.enable=true", "serve.graph.decode_batch_limit=4"]


@pytest.mark.parametrize("version,limit_flag", [
    ("0.9.1", "acl_graph_decode_batch_size_limit"), ("0.10", "graph_decode_batch_size_limit"),
    ("0.10.1", "graph_decode_batch_size_limit"), ("jd-main", "acl_graph_decode_batch_size_limit"),
    ("0.11", "acl_graph_decode_batch_size_limit"),
])
def test_graph_and_overlap_flags_per_version(version, limit_flag):
    dep = _dep(f'serve.version="{version}"', "serve.schedule_overlap=true", *GRAPH)
    flags = _flags(dep.ranks[3].argv)
    assert flags["enable_graph"] == "true" and flags[limit_flag] == "4" and flags["enable_schedule_overlap"] == "true"
    other = {"graph_decode_batch_size_limit", "acl_graph_decode_batch_size_limit"} - {limit_flag}
    assert not other & set(flags)


def test_defaults_emit_nothing_new():
    flags = _flags(_dep().ranks[0].argv)
    assert not {"enable_graph", "enable_schedule_overlap", "enable_eplb", "redundant_experts_num"} & set(flags)
    assert not _dep().ranks[0].wrapper and "LD_PRELOAD" not in _dep().ranks[0].env


def test_graph_limit_absent_in_v090_names_the_versions_that_have_it():
    with pytest.raises(ServeError, match=r"serve.graph.decode_batch_limit: --acl_graph_decode_batch_size_limit does not "
                                         r"exist in xLLM 0.9 .*0.9.1"):
        _dep('serve.version="0.9"', *GRAPH)


def test_bad_option_combinations_are_one_line_errors(cli):
    for sets, message in [(["serve.graph.decode_batch_limit=4"], "without graph mode"),
                          (["serve.preload=libjemalloc.so.2"], "not an absolute path"),
                          (["serve.npu_init=true"], "serve.engine is cpu")]:
        r = cli("serve", "tiny/glm5-cpu" if "npu_init" in sets[0] else "glm5/a3-w8a8", "--dry-run",
                *[x for s in sets for x in ("--set", s)])
        assert r.code == 2 and r.err.count("\n") == 1 and message in r.err, r.err


def test_graph_limit_above_the_mtp_cap_warns():
    dep = _dep("serve.graph.enable=true", "serve.graph.decode_batch_limit=32", "serve.speculative.num_tokens=3")
    assert any("32 / (num_speculative_tokens + 1) = 8" in w for w in dep.warnings)
    assert not _dep("serve.graph.enable=true", "serve.graph.decode_batch_limit=8",
                    "serve.speculative.num_tokens=3").warnings


def test_eplb_flags_exist_in_every_version():
    for version in ("0.9", "0.10", "0.11"):
        flags = _flags(_dep(f'serve.version="{version}"', "serve.eplb.enable=true", "serve.eplb.redundant_experts=2",
                            "serve.eplb.update_interval=2000").ranks[0].argv)
        assert (flags["enable_eplb"], flags["redundant_experts_num"], flags["eplb_update_interval"]) == ("true", "2", "2000")


def test_cpu_binding_per_local_device_as_in_the_glm5_guide():
    dep = _dep("serve.numactl_cores_per_rank=40")
    # numactl -C $((DEVICE*40))-$((DEVICE*40+39))
    assert [r.wrapper for r in dep.ranks[:3]] == [["numactl", "-C", f"{d * 40}-{d * 40 + 39}"] for d in range(3)]
    assert dep.ranks[15].wrapper == ["numactl", "-C", "600-639"]
    assert "\nnumactl -C 40-79 xllm --model=" in dep.scripts["0"]
    assert "command -v numactl" in dep.scripts["0"]


def test_script_steps_for_preload_and_npu_init(tmp_path):
    """Run the script: a missing preload library stops it (exit 2) before any rank starts; the NPU
    initialisation runs `torch_npu.npu.set_device(i)` for every device (a stand-in python records it)."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s" "$2" > {tmp_path}/init.py\n')
    fake.chmod(0o755)
    lib = tmp_path / "libfake.so"
    dep = _dep(f"serve.preload={lib}", "serve.npu_init=true", "serve.binary=true")
    script = tmp_path / "node0.sh"
    script.write_text(dep.scripts["0"])
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "LOG_DIR": str(tmp_path / "logs")}
    run = subprocess.run(["bash", str(script)], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and f"serve.preload: {lib} not found" in run.stderr
    assert not (tmp_path / "logs").exists()
    init = (tmp_path / "init.py").read_text()
    assert "torch_npu.npu.set_device(i) for i in range(16)" in init
    lib.write_bytes(b"")  # present now (empty: the loader only warns), `true` ranks exit 0
    run = subprocess.run(["bash", str(script)], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert dep.ranks[0].env["LD_PRELOAD"] == str(lib)


# DeepSeek-V3 (published config): hidden 7168, moe_intermediate 2048, 61 layers of which the first
# 3 are dense -> 58 MoE layers. One routed expert in dynamic W8A8 as written (int8 weight + fp32
# weight_scale and weight_offset per output channel): gate and up [2048, 7168], down [7168, 2048].
EXPERT_LAYER_BYTES = 3 * 2048 * 7168 + (2048 + 2048 + 7168) * 2 * 4
EXPERT_BYTES = 58 * EXPERT_LAYER_BYTES


def test_planner_counts_redundant_experts_by_hand():
    base = plan_recipe(load_recipe("deepseek-v3/a3-w8a8"))
    eplb = plan_recipe(load_recipe("deepseek-v3/a3-w8a8", ["serve.eplb.enable=true", "serve.eplb.redundant_experts=2"]))
    assert base.devices[0].weights["routed experts"] == 16 * EXPERT_BYTES  # EP16: 16 of 256 experts per device
    assert "redundant experts" not in base.devices[0].weights
    for dev in eplb.devices:
        assert dev.weights["redundant experts"] == 2 * EXPERT_BYTES
    assert eplb.devices[0].weights_total - base.devices[0].weights_total == 2 * EXPERT_BYTES
    off = plan_recipe(load_recipe("deepseek-v3/a3-w8a8", ["serve.eplb.redundant_experts=2"]))
    assert "redundant experts" not in off.devices[0].weights  # xLLM's redundant experts come with EPLB


def test_plan_json_shows_the_row(cli):
    r = cli("plan", "deepseek-v3/a3-w8a8", "--json", "--set", "serve.eplb.enable=true")
    assert r.code == 0, r.err
    assert json.loads(r.out)["device_classes"][0]["weights_bytes"]["redundant experts"] == EXPERT_BYTES


def test_every_generated_variable_is_cited_in_the_docs():
    """docs/serving.md's environment table names a reference source for each variable any shipped
    NPU recipe's ranks get (issue 17: keep only variables we can cite)."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    table = docs.split("**Environment.**", 1)[1].split("\n\n", 2)[1]
    cited: set[str] = set()
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if "reference/" in cells[-1]:
            cited.update(part.strip("` ") for part in cells[0].replace("/", ",").split(","))
    emitted: set[str] = set()
    sets = [["serve.preload=/usr/lib/libjemalloc.so.2"], ['serve.version="0.11"']]
    for name in ("glm5/a3-w8a8", "deepseek-v3/a3-w8a8", "glm47/a3-w8a8", "glm5/a2x2-w8a8", "glm5/a3x2-bf16"):
        for extra in sets:
            dep = build_deployment(load_recipe(name, extra))
            emitted.update(k for r in dep.ranks for k in r.env)
            emitted.update(dep.unset_env)
    assert {"HCCL_BUFFSIZE", "HCCL_IF_IP", "LD_PRELOAD", "ASCEND_RT_VISIBLE_DEVICES"} <= emitted
    assert emitted - cited == set()
