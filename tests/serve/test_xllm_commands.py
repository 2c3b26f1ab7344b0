"""Generated xLLM commands for the shipped recipes, per flag dialect, single and multi-node.

Three kinds of checks:
- a hand-written expectation (from xLLM's docs, reference/xllm.md §2–3, §8) for one rank;
- rules every generated command must satisfy (flags exist in the dialect, global ranks, device
  selection per dialect, rank table only across nodes, ...);
- golden snapshots in ``golden/`` (reviewed once, then guarding against unintended changes;
  regenerate with ``UPDATE_GOLDEN=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ascend.errors import ServeError
from ascend.models import published_model_args
from ascend.plan import plan_recipe
from ascend.plan.memory import moe_dispatch_buffer_mb
from ascend.recipe import load_recipe
from ascend.serve.xllm import build_deployment
from ascend.serve.xllm_flags import TABLES, VERSIONS, xllm_version

LINES = ("0.9", "0.10", "0.11")  # golden snapshots: one per release line

GOLDEN = Path(__file__).parent / "golden"
SINGLE = ["glm5/a3-w8a8", "deepseek-v3/a3-w8a8", "glm47/a3-w8a8"]
MULTI = ["glm5/a3x2-bf16", "glm5/a2x2-w8a8"]
RANK_TABLE = "/nonexistent/ascend-test/ranktable.json"


def _load(name: str, dialect: str, *extra: str, check: bool = True):
    overrides = [f"serve.version=\"{dialect}\"", *extra]
    recipe = load_recipe(name, overrides, check=check)
    if recipe.hardware.nodes > 1:
        per = recipe.hardware.devices_per_node
        ips = {h: [f"192.168.{n}.{d + 10}" for d in range(per)] for n, h in enumerate(recipe.hardware.hosts)}
        recipe = load_recipe(name, overrides + [f"serve.device_ips={json.dumps(ips)}", f"serve.rank_table={RANK_TABLE}"],
                             check=check)
    return recipe


def _flags(argv: list[str]) -> dict[str, str]:
    out = {}
    for arg in argv[1:]:
        name, _, value = arg[2:].partition("=")
        assert name not in out, f"--{name} given twice"
        out[name] = value
    return out


def test_hand_written_glm5_a3_rank5_v010():
    """GLM-5 W8A8 on one A3 with xLLM 0.10, rank 5 — each flag from xLLM's docs. The tunable
    values are pinned here (as in xLLM's GLM-5 guide) so recipe tuning does not move this test."""
    dep = build_deployment(_load("glm5/a3-w8a8", "0.10", "serve.memory_utilization=0.85", "serve.max_seqs=32",
                                 "serve.max_tokens_per_batch=8192", "serve.port=18000", "serve.master_port=9748",
                                 "convert.output=/data/models/GLM-5-w8a8", 'serve.speculative={"method": "mtp", "num_tokens": 1}',
                                 "parallel.dp=1", "parallel.ep=16"))
    r = dep.ranks[5]
    assert r.argv == [
        "xllm", "--model=/data/models/GLM-5-w8a8", "--model_id=GLM-5-w8a8", "--port=18005",
        "--master_node_addr=127.0.0.1:9748", "--nnodes=16", "--node_rank=5", "--device_id=5", "--dp_size=1",
        "--ep_size=16", "--communication_backend=hccl", "--max_memory_utilization=0.85",
        "--max_tokens_per_batch=8192", "--max_seqs_per_batch=32", "--block_size=128", "--reasoning_parser=glm5",
        "--tool_call_parser=glm5", "--draft_model=/data/models/GLM-5-w8a8/mtp", "--num_speculative_tokens=1"]
    assert r.env["HCCL_OP_EXPANSION_MODE"] == "AIV"  # single node only
    assert r.env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert r.env["HCCL_CONNECT_TIMEOUT"] == "300" and r.env["HCCL_EXEC_TIMEOUT"] == "300"
    assert dep.rank_table is None and dep.rank_table_path is None
    assert dep.base_url() == "http://127.0.0.1:18000" and dep.served_model == "GLM-5-w8a8"


@pytest.mark.parametrize("dialect", list(VERSIONS))
@pytest.mark.parametrize("name", SINGLE + MULTI)
def test_rules_for_every_rank(name, dialect):
    recipe = _load(name, dialect)
    version = xllm_version(dialect)
    dep = build_deployment(recipe)
    world = recipe.hardware.nodes * recipe.hardware.devices_per_node
    per = recipe.hardware.devices_per_node
    multi = recipe.hardware.nodes > 1
    assert len(dep.ranks) == world
    for r in dep.ranks:
        flags = _flags(r.argv)
        # every flag exists in this version's table (xLLM's own sources) with a legal value
        assert all(version.has(f) for f in flags), [f for f in flags if not version.has(f)]
        for f, value in flags.items():
            version.flags[f].parse(value)
        assert "enable_mla" not in flags  # removed in 0.9
        assert flags["nnodes"] == str(world) and flags["node_rank"] == str(r.rank)
        assert r.node == r.rank // per and r.local_device == r.rank % per
        assert flags["master_node_addr"] == (f"{recipe.hardware.hosts[0]}:{recipe.serve.master_port}" if multi
                                             else f"127.0.0.1:{recipe.serve.master_port}")
        assert flags["communication_backend"] == "hccl"
        assert flags["dp_size"] == str(recipe.parallel.dp) and flags["ep_size"] == str(recipe.parallel.ep)
        # reference/xllm.md §1: --devices on 0.9.x, --device_id on 0.10.x and jd main, neither on main
        line = {"0.9": "0.9", "0.10": "0.10", "jd-main": "0.10", "0.11": "0.11"}[version.line]
        device = {"0.9": flags.get("devices"), "0.10": flags.get("device_id"), "0.11": r.env.get("ASCEND_RT_VISIBLE_DEVICES")}
        assert device[line] == (f"npu:{r.local_device}" if line == "0.9" else str(r.local_device))
        assert ("devices" in flags) == (line == "0.9") and ("device_id" in flags) == (line == "0.10")
        assert ("ASCEND_RT_VISIBLE_DEVICES" in r.env) == (line == "0.11")
        if recipe.serve.speculative:
            assert flags["draft_model"] == flags["model"] + "/mtp"  # ascend convert's mtp: export output
            assert ("draft_devices" in flags) == (line == "0.9")
        for parser in ("tool_call_parser", "reasoning_parser"):
            assert flags.get(parser, "x") != "auto"
        if multi:
            assert flags["host"] == recipe.hardware.hosts[r.node]
            assert flags["rank_tablefile"] == RANK_TABLE
            assert "HCCL_OP_EXPANSION_MODE" not in r.env and r.env["HCCL_IF_IP"] == recipe.hardware.hosts[r.node]
        else:
            assert "host" not in flags and "rank_tablefile" not in flags
        for k, v in recipe.serve.env.items():
            assert r.env[k] == v  # serve.env wins
    if multi:
        assert dep.base_url() == f"http://{recipe.hardware.hosts[0]}:{recipe.serve.port}"
        assert dep.unset_env == ["HCCL_OP_EXPANSION_MODE"]
        assert set(dep.scripts) == {str(n) for n in range(recipe.hardware.nodes)}
        assert dep.rank_table["server_count"] == str(recipe.hardware.nodes)
        for n, script in dep.scripts.items():
            assert "unset HCCL_OP_EXPANSION_MODE" in script and f"cat > {RANK_TABLE}" in script
            assert script.count("--node_rank=") == per
    data = dep.to_json()
    assert set(data) == {"ranks", "scripts", "rank_table"}
    assert set(data["ranks"][0]) == {"rank", "node", "argv", "env"}


@pytest.mark.parametrize("dialect", LINES)
@pytest.mark.parametrize("name", SINGLE + MULTI)
def test_golden(name, dialect):
    dep = build_deployment(_load(name, dialect))
    snap = {"rank0": dep.ranks[0].to_json(), "last": dep.ranks[-1].to_json(), "rank_table": dep.rank_table,
            "unset": dep.unset_env}
    path = GOLDEN / f"{name.replace('/', '__')}__{dialect}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(snap, indent=1) + "\n")
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review the diff"
    assert snap == json.loads(path.read_text())


def test_graph_limit_flag_spelled_per_version():
    # reference/xllm-flags: graph_decode_batch_size_limit in v0.10.x, acl_... in v0.9.1 and both mains
    ok = {"0.9.1": "acl_graph_decode_batch_size_limit", "0.10": "graph_decode_batch_size_limit",
          "0.10.1": "graph_decode_batch_size_limit", "jd-main": "acl_graph_decode_batch_size_limit",
          "0.11": "acl_graph_decode_batch_size_limit"}
    for dialect, flag in ok.items():
        dep = build_deployment(_load("glm5/a3-w8a8", dialect, f'serve.extra_args=["--{flag}=4"]'))
        assert dep.ranks[0].argv[-1] == f"--{flag}=4"
        wrong = next(f for f in set(ok.values()) if f != flag)
        with pytest.raises(ServeError, match=f"--{wrong} does not exist in xLLM {dialect} .*it exists in xLLM"):
            build_deployment(_load("glm5/a3-w8a8", dialect, f'serve.extra_args=["--{wrong}=4"]'))


@pytest.mark.parametrize("dialect,family,parser,fatal", [
    ("jd-main", "glm_moe_dsa", "tool_call_parser", True),  # jd main: no glm_moe_dsa auto mapping
    ("0.9", "glm_moe_dsa", "tool_call_parser", True),
    ("0.10", "glm_moe_dsa", "tool_call_parser", False),  # v0.10.x maps it to glm5
    ("0.11", "glm_moe_dsa", "tool_call_parser", False),  # xLLM-AI main maps it to glm5
    ("0.11", "glm_moe_dsa", "reasoning_parser", True),   # reasoning auto never maps GLM-5
    ("0.10", "deepseek_v3", "tool_call_parser", False),
])
def test_auto_parsers(dialect, family, parser, fatal):
    name = "glm5/a3-w8a8" if family == "glm_moe_dsa" else "deepseek-v3/a3-w8a8"
    recipe = _load(name, dialect, f"serve.{parser}=auto")
    if fatal:
        with pytest.raises(ServeError, match="'auto' is fatal"):
            build_deployment(recipe)
    else:
        assert f"--{parser}=auto" in build_deployment(recipe).ranks[0].argv


def test_bad_inputs():
    """The generator's own guards (recipe checks are off here, so they are what is tested)."""
    def load(*extra):
        return _load("glm5/a3-w8a8", "0.10", *extra, check=False)

    with pytest.raises(ServeError, match="not a supported xLLM version"):
        build_deployment(load("serve.version=\"0.7\""))
    with pytest.raises(ServeError, match="no tool call parser 'glm6'"):
        build_deployment(load("serve.tool_call_parser=glm6"))
    with pytest.raises(ServeError, match="not a --flag=value"):
        build_deployment(load('serve.extra_args=["enable_graph"]'))
    with pytest.raises(ServeError, match="MTP draft exported"):
        build_deployment(load("convert.mtp=drop"))
    with pytest.raises(ServeError, match="master_port 18000 equals serve.port"):
        build_deployment(load("serve.master_port=18000"))


def test_multi_node_without_device_ips_still_prints_but_script_refuses():
    dep = build_deployment(load_recipe("glm5/a2x2-w8a8", ["serve.rank_table=" + RANK_TABLE]))
    assert dep.rank_table is None and dep.rank_table_path == RANK_TABLE
    assert f"[ -f {RANK_TABLE} ] ||" in dep.scripts["0"]


def test_buffer_set_only_when_above_default_and_user_value_warned():
    recipe = _load("deepseek-v3/a3-w8a8", "0.10", "serve.max_seqs=256", "serve.env={}")
    dep = build_deployment(recipe)
    need = moe_dispatch_buffer_mb("ascend-a3", published_model_args("deepseek-ai/DeepSeek-V3"), ep=16, max_bs=512)
    assert need > 512 and int(dep.ranks[0].env["HCCL_BUFFSIZE"]) >= need
    small = build_deployment(_load("deepseek-v3/a3-w8a8", "0.10", "serve.max_seqs=256", 'serve.env={"HCCL_BUFFSIZE": "200"}'))
    assert small.ranks[0].env["HCCL_BUFFSIZE"] == "200" and "HCCL_BUFFSIZE=200" in small.warnings[0]
    quiet = build_deployment(_load("deepseek-v3/a3-w8a8", "0.10", "serve.max_seqs=4", "serve.env={}"))
    assert "HCCL_BUFFSIZE" not in quiet.ranks[0].env and not quiet.warnings


@pytest.mark.parametrize("name", ["tiny/glm5-cpu", "tiny/glm47-cpu", "tiny/deepseek-v3-cpu"])
def test_cpu_engine_commands_use_the_same_flags(name):
    recipe = load_recipe(name)
    dep = build_deployment(recipe)
    xllm_like = build_deployment(load_recipe(name, ["serve.engine=xllm"], check=False))
    for cpu, npu in zip(dep.ranks, xllm_like.ranks):
        assert cpu.argv[0] == "ascend-xllm-cpu" and cpu.argv[1:] == npu.argv[1:]
        assert not any(k.startswith(("HCCL", "ATB")) for k in cpu.env)
    assert dep.rank_table is None


@pytest.mark.parametrize("sets", [["serve.max_seqs=256", "serve.env={}"], ["serve.max_seqs=4", "serve.env={}"],
                                  ["serve.max_seqs=256", 'serve.env={"HCCL_BUFFSIZE": "300"}']])
def test_plan_shows_the_hccl_buffsize_serve_sets(sets):
    recipe = load_recipe("deepseek-v3/a3-w8a8", sets)
    plan = plan_recipe(recipe).as_dict()["hccl"]
    env = build_deployment(recipe).ranks[0].env
    assert plan["HCCL_BUFFSIZE"] == (int(env["HCCL_BUFFSIZE"]) if "HCCL_BUFFSIZE" in env else None)
    if plan["HCCL_BUFFSIZE"] is not None:  # the plan counts that buffer on every communicator
        assert set(plan["buffsize_mb"].values()) == {plan["HCCL_BUFFSIZE"]}


def test_flag_tables_are_the_reference_extracts():
    """The packaged tables are exactly shared/reference/xllm-flags (extracted from xLLM's sources)."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "reference" / "xllm-flags"
    if not shared.is_dir():
        pytest.skip(f"{shared} not present (it sits beside the repository in development and CI)")
    packaged = TABLES
    names = sorted(p.name for p in shared.glob("*.tsv"))
    assert names == sorted(p.name for p in packaged.glob("*.tsv"))
    for name in names:
        assert (packaged / name).read_bytes() == (shared / name).read_bytes(), name


@pytest.mark.parametrize("version,arg,ok", [
    ("0.9", "--enable_fused_mc2=1", False),  # the old hand-kept 0.9 table listed it; v0.9.x lacks it
    ("0.9.1", "--use_cpp_chat_template=true", False),
    ("0.10", "--enable_fused_mc2=1", True),
    ("0.10", "--max_seqs_per_batch=lots", False),  # int32 flag
    ("0.10", "--max_memory_utilization=0.9", True),
    ("0.10", "--enable_graph=maybe", False),  # bool flag: gflags spellings only
    ("0.10", "--enable_graph", True),
    ("0.10", "--noenable_graph", True),
    ("0.10", "--max_seqs_per_batch", False),  # a bare non-boolean
    ("main", "--device_id=0", False),  # removed on xLLM-AI main
])
def test_extra_args_must_exist_in_the_version_with_a_legal_value(version, arg, ok):
    recipe = _load("glm5/a3-w8a8", version, f'serve.extra_args=["{arg}"]')
    if ok:
        assert build_deployment(recipe).ranks[0].argv[-1] == arg
    else:
        with pytest.raises(ServeError) as err:
            build_deployment(recipe)
        assert err.value.exit_code == 2 and "serve.extra_args" in err.value.line()


def test_unknown_flag_names_the_versions_that_have_it():
    with pytest.raises(ServeError, match=r"--device_id does not exist in xLLM main .*it exists in xLLM 0\.10\.0, 0\.10\.1, jd-main"):
        build_deployment(_load("glm5/a3-w8a8", "main", 'serve.extra_args=["--device_id=0"]'))
