"""`ascend serve --dry-run` through the real CLI entry point."""

from __future__ import annotations

import json

from ascend.serve.ranktable import validate_rank_table


def test_dry_run_json(cli):
    r = cli("serve", "glm5/a3-w8a8", "--dry-run", "--json", "--set", 'serve.version="0.9"')
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert set(data) == {"ranks", "scripts", "rank_table"} and data["rank_table"] is None
    assert [x["rank"] for x in data["ranks"]] == list(range(16))
    assert "--devices=npu:15" in data["ranks"][15]["argv"] and list(data["scripts"]) == ["0"]


def test_dry_run_multi_node_from_saved_hccn_output(cli, tmp_path):
    hosts = ["10.0.0.21", "10.0.0.22"]
    for n, host in enumerate(hosts):
        (tmp_path / host).mkdir()
        for d in range(8):
            (tmp_path / host / f"hccn_{d}.txt").write_text(f"ipaddr:192.168.{n}.{d + 1}\nnetmask:255.255.255.0\n")
    table_path = tmp_path / "rt.json"
    r = cli("serve", "glm5/a2x2-w8a8", "--dry-run", "--json", "--device-ips-from", str(tmp_path),
            "--set", f"hardware.hosts={json.dumps(hosts)}", "--set", f"serve.rank_table={table_path}")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    table = data["rank_table"]
    validate_rank_table(table, chip="ascend-910b", hosts=hosts, devices_per_node=8)
    assert table["server_list"][1]["device"][7] == {"device_id": "7", "device_ip": "192.168.1.8", "rank_id": "15"}
    assert set(data["scripts"]) == {"0", "1"} and f"--rank_tablefile={table_path}" in data["ranks"][9]["argv"]
    assert not table_path.exists()  # a dry run writes nothing


def test_dry_run_text_and_errors(cli, tmp_path):
    r = cli("serve", "tiny/glm5-cpu", "--dry-run")
    assert r.code == 0 and r.out.count("ascend-xllm-cpu --model=") == 2 and "# ===== node 0" in r.out
    bad = cli("serve", "glm5/a3-w8a8", "--dry-run", "--set", 'serve.extra_args=["--enable_mla=true"]')
    assert bad.code == 2 and bad.err.count("\n") == 1 and "--enable_mla does not exist in xLLM 0.10" in bad.err
    (tmp_path / "x").mkdir()
    missing = cli("serve", "glm5/a2x2-w8a8", "--dry-run", "--device-ips-from", str(tmp_path))
    assert missing.code == 2 and "hccn_0.txt: missing" in missing.err
