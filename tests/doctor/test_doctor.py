"""`ascend doctor` findings on recorded hosts (A2, A3, mispaired torch_npu, torch_npu without CANN)
and on this machine (no NPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ascend.cli.main import main
from ascend.doctor import ERROR, INFO, OK, WARN, LocalHost, ReplayHost, Target, run_doctor

FIXTURES = Path(__file__).parent / "fixtures"

A3_RECIPE = Target(recipe="glm5/a3-w8a8", chip="ascend-a3", devices_per_node=16, device_memory_mb=65536, engine="xllm", xllm_binary="xllm")


def severities(report, check):
    return [f.severity for f in report.findings if f.check == check]


def test_a2_host_is_healthy_and_recognised():
    report = run_doctor(ReplayHost(FIXTURES / "a2-atlas800t-910b"))
    assert report.exit_code == 0
    assert [f for f in report.findings if f.severity in (WARN, ERROR)] == []
    (npu,) = report.by_check("npu")
    assert npu.data == {"generation": "a2", "devices": 8, "cards": 8, "names": ["910B3"]}
    assert severities(report, "cann.driver") == [OK] and severities(report, "firmware") == [OK]
    assert severities(report, "torch_npu") == [OK] and severities(report, "hccn.link") == [OK]


def test_a3_host_is_sixteen_dies():
    report = run_doctor(ReplayHost(FIXTURES / "a3-atlas800-a3"))
    assert report.exit_code == 0
    (npu,) = report.by_check("npu")
    assert npu.data["generation"] == "a3" and npu.data["devices"] == 16 and npu.data["cards"] == 8
    assert "Atlas A3" in npu.message
    # a nightly torch_npu build is not in the release table: said, not failed
    assert severities(report, "torch_npu.cann") == [INFO]
    assert "16 devices" in report.by_check("hccn.link")[0].message


def test_a3_recipe_on_a2_host_is_an_error_and_on_a3_it_fits():
    on_a2 = run_doctor(ReplayHost(FIXTURES / "a2-atlas800t-910b"), A3_RECIPE)
    msgs = [f.message for f in on_a2.by_check("npu.recipe")]
    assert any("is for ascend-a3" in m for m in msgs) and any("needs 16 devices" in m for m in msgs)
    assert on_a2.exit_code == 3
    on_a3 = run_doctor(ReplayHost(FIXTURES / "a3-atlas800-a3"), A3_RECIPE)
    assert on_a3.by_check("npu.recipe") == []


def test_device_memory_smaller_than_the_plan_assumes():
    target = Target(recipe="r", chip="ascend-910b", devices_per_node=8, device_memory_mb=96 * 1024)
    (finding,) = run_doctor(ReplayHost(FIXTURES / "a2-atlas800t-910b"), target).by_check("npu.recipe")
    assert finding.severity == ERROR and "65536 MB" in finding.message
    target.device_memory_mb = 64 * 1024  # the A2 profile: 64 GiB = 65536 MB, as npu-smi reports
    assert run_doctor(ReplayHost(FIXTURES / "a2-atlas800t-910b"), target).by_check("npu.recipe") == []


def test_mispaired_torch_npu_is_reported_with_the_right_pair():
    report = run_doctor(ReplayHost(FIXTURES / "a2-mispaired-torch-npu"))
    (pair,) = report.by_check("torch_npu")[:1]
    assert pair.severity == ERROR
    assert "torch 2.6.0 with torch_npu 2.5.1.post1" in pair.message and "torch 2.5.1" in pair.message
    assert "pip install torch==2.5.1" in pair.fix and "CANN 8.2.RC1: 2.6.0" in pair.fix
    assert severities(report, "torch.import") == [ERROR]
    assert report.exit_code == 3
    # everything else is the healthy A2 host it inherits from
    assert {f.check for f in report.errors} == {"torch_npu", "torch.import"}


def test_torch_npu_without_cann_breaks_import_torch():
    report = run_doctor(ReplayHost(FIXTURES / "cpu-torch-npu-without-cann"))
    assert severities(report, "npu") == [INFO]  # no NPU here: said plainly, not an error
    (cann,) = report.by_check("torch_npu.cann")
    assert cann.severity == ERROR and "import torch" in cann.message and "pip uninstall torch-npu" in cann.fix
    (imp,) = report.by_check("torch.import")
    assert imp.severity == ERROR and "libhccl.so" in imp.message and "set_env.sh" in imp.fix
    assert severities(report, "hostname") == [WARN]  # 127.0.1.1 is loopback


def test_link_down_firmware_and_driver_mismatch(fixture_copy):
    host_dir = fixture_copy("a2-atlas800t-910b")
    (host_dir / "commands/hccn_tool_-i_3_-link_-g.txt").write_text("link status: DOWN\n")
    fw = host_dir / "root/usr/local/Ascend/firmware/version.info"
    fw.write_text(fw.read_text().replace("Version=7.7.0.1.231", "Version=7.8.0.2.10"))
    drv = host_dir / "root/usr/local/Ascend/driver/version.info"
    drv.write_text(drv.read_text().replace("Innerversion=V100R001C21SPC002B220", "Innerversion=V100R001C25SPC001B100"))
    single = run_doctor(ReplayHost(host_dir))
    (link,) = single.by_check("hccn.link")
    assert link.severity == WARN and "3:DOWN" in link.message
    assert severities(single, "firmware") == [ERROR]
    (compat,) = single.by_check("cann.driver")
    assert compat.severity == ERROR and "V100R001C25" in compat.message
    multi = run_doctor(ReplayHost(host_dir), Target(nodes=2))
    assert severities(multi, "hccn.link") == [ERROR]


def test_processes_holding_npus_are_listed(fixture_copy):
    host_dir = fixture_copy("a2-atlas800t-910b")
    (host_dir / "commands/npu-smi_info.txt").write_text((FIXTURES / "npu-smi/910b4-with-processes.txt").read_text())
    (finding,) = run_doctor(ReplayHost(host_dir)).by_check("npu.processes")
    assert finding.severity == WARN and finding.data["pids"] == [19334, 19341]
    assert "kill 19334 19341" in finding.fix


def test_multi_node_hccl_environment(fixture_copy):
    host_dir = fixture_copy("a2-atlas800t-910b")
    facts = json.loads((host_dir / "host.json").read_text())
    facts["env"].update({"HCCL_SOCKET_IFNAME": "eth9", "GLOO_SOCKET_IFNAME": "enp189s0f0", "HCCL_OP_EXPANSION_MODE": "AIV"})
    (host_dir / "host.json").write_text(json.dumps(facts))
    report = run_doctor(ReplayHost(host_dir), Target(nodes=2, env={"HCCL_BUFFSIZE": "lots"}))
    messages = {f.message: f.severity for f in report.by_check("hccl.env")}
    assert messages["HCCL_SOCKET_IFNAME=eth9: no network interface 'eth9' on this host"] == ERROR
    assert not any(m.startswith("GLOO_SOCKET_IFNAME=") for m in messages)  # enp189s0f0 exists
    assert messages["TP_SOCKET_IFNAME is not set for a 2-node run"] == WARN
    assert messages["HCCL_BUFFSIZE='lots' is not a number of MB"] == ERROR
    assert messages["HCCL_OP_EXPANSION_MODE=AIV is set for a multi-node run"] == WARN


def test_ports_disk_and_ram_for_a_recipe(fixture_copy):
    host_dir = fixture_copy("a2-atlas800t-910b")
    facts = json.loads((host_dir / "host.json").read_text())
    facts.update({"ports_in_use": [18003], "disk_free": {"/data": 500 * 2**30}})
    (host_dir / "host.json").write_text(json.dumps(facts))
    meminfo = host_dir / "root/proc/meminfo"  # a small node: 16 GiB available
    meminfo.write_text(meminfo.read_text().replace("MemAvailable:   1501234567 kB", "MemAvailable:   16777216 kB"))
    target = Target(ports=list(range(18000, 18008)) + [9748], convert_output="/data/out/GLM-5-w8a8",
                    output_bytes=800 * 2**30, output_bytes_basis="test", convert_workers=64)
    report = run_doctor(ReplayHost(host_dir), target)
    (ports,) = report.by_check("ports")
    assert ports.severity == ERROR and ports.message == "ports in use: 18003"
    (disk,) = report.by_check("disk")
    assert disk.severity == ERROR and "500 GiB free at /data" in disk.message
    (ram,) = report.by_check("ram")
    # the converter's bound: 0.3 GB + 64 x (0.3 GB + 6 x 32 MiB) = 32 GB > 16 GiB; the fix names a count that fits
    per_worker = 300 * 10**6 + 6 * 32 * 2**20
    assert ram.severity == ERROR and ram.data["max_workers"] == (16 * 2**30 - 300 * 10**6) // per_worker == 33
    target.convert_workers, target.output_bytes = 8, 100 * 2**30
    ok = run_doctor(ReplayHost(host_dir), target)
    assert severities(ok, "ram") == [OK] and severities(ok, "disk") == [OK]


def test_commands_time_out(tmp_path):
    result = LocalHost(timeout_s=0.5).run(["sleep", "5"])
    assert result.returncode == 124 and "timed out" in result.stderr
    assert LocalHost().run(["definitely-not-a-command-xyz"]) is None
    (tmp_path / "usr/local/Ascend/driver").mkdir(parents=True)
    (tmp_path / "usr/local/Ascend/driver/version.info").write_text("Version=24.1.rc3\n")
    assert LocalHost(root=tmp_path).read("/usr/local/Ascend/driver/version.info") == "Version=24.1.rc3\n"


def test_this_machine_without_npu_exits_0_with_json(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert (exc.value.code or 0) == 0 and out["ok"] is True
    npu = next(f for f in out["findings"] if f["check"] == "npu")
    assert npu["severity"] == INFO and re.search(r"no Ascend NPU on this host", npu["message"])
    checks = {f["check"] for f in out["findings"]}
    assert {"torch.import", "xllm", "hccl.env", "hostname"} <= checks  # the rest still ran


def test_replay_cli_exit_3_on_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--replay", str(FIXTURES / "a2-mispaired-torch-npu")])
    captured = capsys.readouterr()
    assert exc.value.code == 3
    assert "ERROR torch_npu" in captured.out and "error: doctor found 2 error(s)" in captured.err
