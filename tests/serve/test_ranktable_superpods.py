"""A3 rank tables across SuperPoDs, and where the rank table lives (issue 17).

Expected tables are written by hand from the CANN HCCL guide's A3 format 1.2 page
(``super_pod_list[{super_pod_id, server_list[{server_id}]}]``, one entry per SuperPoD).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ascend.errors import ServeError
from ascend.recipe import load_recipe
from ascend.serve.ranktable import build_rank_table, device_info_from_dir, validate_rank_table
from ascend.serve.xllm import build_deployment

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
IPS = [["192.168.1.8", "192.168.1.9"], ["192.168.2.8", "192.168.2.9"], ["192.168.3.8", "192.168.3.9"]]
SDIDS = [["1", "2"], ["3", "4"], ["5", "6"]]


def test_nodes_of_two_superpods_are_listed_separately():
    table = build_rank_table("ascend-a3", HOSTS, IPS, super_device_ids=SDIDS, super_pod_ids=["7", "9", "7"])
    assert table["super_pod_list"] == [
        {"super_pod_id": "7", "server_list": [{"server_id": "10.0.0.1"}, {"server_id": "10.0.0.3"}]},
        {"super_pod_id": "9", "server_list": [{"server_id": "10.0.0.2"}]},
    ]
    validate_rank_table(table, chip="ascend-a3", hosts=HOSTS, devices_per_node=2)


def _save_tool_output(base, hosts, pods_per_die):
    """What `hccn_tool -i d -ip -g` and `npu-smi info -t spod-info` print, saved per host and die."""
    for n, host in enumerate(hosts):
        (base / host).mkdir()
        for d, pod in enumerate(pods_per_die[n]):
            (base / host / f"hccn_{d}.txt").write_text(f"ipaddr:192.168.{n}.{d + 1}\nnetmask:255.255.255.0\n")
            (base / host / f"spod_{d}.txt").write_text(
                f"SDID                           : {100 * n + d}\nSuper Pod Size                 : 48\n"
                f"Super Pod ID                   : {pod}\n")


def test_super_pod_ids_come_from_spod_info(tmp_path, cli):
    hosts = ["10.0.0.21", "10.0.0.22"]
    _save_tool_output(tmp_path, hosts, [["3"] * 16, ["5"] * 16])
    r = cli("serve", "glm5/a3x2-bf16", "--dry-run", "--json", "--device-ips-from", str(tmp_path),
            "--set", f"hardware.hosts={json.dumps(hosts)}")
    assert r.code == 0, r.err
    table = json.loads(r.out)["rank_table"]
    assert table["version"] == "1.2"
    assert table["super_pod_list"] == [{"super_pod_id": "3", "server_list": [{"server_id": "10.0.0.21"}]},
                                       {"super_pod_id": "5", "server_list": [{"server_id": "10.0.0.22"}]}]
    assert table["server_list"][1]["device"][2]["super_device_id"] == "102"


def test_dies_of_one_node_in_different_superpods_refused(tmp_path):
    _save_tool_output(tmp_path, ["h0", "h1"], [["1", "1"], ["1", "2"]])
    with pytest.raises(ServeError, match="different Super Pod IDs"):
        device_info_from_dir(tmp_path, ["h0", "h1"], 2)


def test_default_rank_table_path_is_absolute_and_independent_of_cwd(tmp_path, monkeypatch):
    paths = set()
    for cwd in (tmp_path, tmp_path.parent):
        monkeypatch.chdir(cwd)
        dep = build_deployment(load_recipe("glm5/a2x2-w8a8"))
        paths.add(dep.rank_table_path)
        assert f"--rank_tablefile={dep.rank_table_path}" in dep.ranks[9].argv
    assert paths == {"/tmp/ascend-recipes/glm5-a2x2-w8a8/ranktable.json"}


def test_relative_rank_table_refused(cli):
    r = cli("serve", "glm5/a2x2-w8a8", "--dry-run", "--set", "serve.rank_table=rt.json")
    assert r.code == 2 and r.err.count("\n") == 1 and "relative path" in r.err, r.err


def test_node_script_creates_the_directory_and_writes_the_same_table(tmp_path):
    """Both node scripts, run with bash, write the identical table at the same (new) path; the
    engine binary is `true`, so the ranks exit at once and the script with them."""
    path = tmp_path / "deep" / "er" / "ranktable.json"
    ips = {h: [f"192.168.{n}.{d + 1}" for d in range(8)] for n, h in enumerate(["10.0.0.11", "10.0.0.12"])}
    recipe = load_recipe("glm5/a2x2-w8a8", [f"serve.rank_table={path}", f"serve.device_ips={json.dumps(ips)}",
                                            "hardware.hosts=[10.0.0.11, 10.0.0.12]", "serve.binary=true"])
    dep = build_deployment(recipe)
    for node, script in dep.scripts.items():
        shutil.rmtree(tmp_path / "deep", ignore_errors=True)  # each node starts without the directory
        env = {"PATH": "/usr/bin:/bin", "LOG_DIR": str(tmp_path / f"logs{node}")}
        run = subprocess.run(["bash", "-c", script], check=False, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert json.loads(path.read_text()) == dep.rank_table
        assert not list(path.parent.glob("*.tmp*"))


def test_a_given_rank_table_is_never_rewritten(tmp_path):
    """serve.rank_table naming an existing file: the node scripts (run with bash, engine `true`)
    and the local launcher leave that file's bytes alone; a node without it gets a copy; a node
    whose file differs stops with exit 2 instead of having it overwritten by the script's copy."""
    from ascend.serve.launch import Service

    hosts = ["10.0.0.21", "10.0.0.22"]  # the recipe's
    ips = {h: [f"192.168.{n}.{d + 1}" for d in range(8)] for n, h in enumerate(hosts)}
    table = build_deployment(load_recipe("glm5/a2x2-w8a8", [f"serve.device_ips={json.dumps(ips)}"])).rank_table
    given = tmp_path / "mine" / "ranktable.json"
    given.parent.mkdir()
    original = json.dumps(table, separators=(",", ":")).encode() + b"\n"  # the user's own formatting
    given.write_bytes(original)
    dep = build_deployment(load_recipe("glm5/a2x2-w8a8", [f"serve.rank_table={given}", "serve.binary=true"]))
    assert dep.rank_table == table and dep.rank_table_path == str(given)

    def run_node(node: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "LOG_DIR": str(tmp_path / f"logs{node}")}
        return subprocess.run(["bash", "-c", dep.scripts[node]], check=False, env=env, capture_output=True, text=True,
                              timeout=60)

    for node in dep.scripts:
        run = run_node(node)
        assert run.returncode == 0, run.stderr
        assert given.read_bytes() == original
    given.unlink()  # another node, without the file: it gets the same table
    assert run_node("1").returncode == 0 and json.loads(given.read_text()) == table
    edited = json.loads(original)
    edited["server_list"][1]["device"][0]["device_ip"] = "192.168.9.9"  # the user edited it since
    given.write_text(json.dumps(edited))
    run = run_node("1")
    assert run.returncode == 2 and "differs from serve.rank_table" in run.stderr
    assert json.loads(given.read_text()) == edited

    given.write_bytes(original)
    svc = Service(dep, log_dir=tmp_path / "logs", timeout_s=5, grace_s=1)
    svc._write_rank_table()  # what start() does before the ranks
    assert given.read_bytes() == original
