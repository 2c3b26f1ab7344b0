"""Long stages report progress when stderr is not a terminal (CI, `| tee`): plain lines at
ASCEND_PROGRESS_S intervals, on stderr, never on stdout."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest


def test_tiny_convert_verify_print_progress_when_piped(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ASCEND_PROGRESS_S", "0")  # every advance; heartbeats every 0.1 s
    src, out = tmp_path / "src", tmp_path / "out"
    res = cli("tiny", str(src), "--arch", "glm_moe_dsa", "--fp8")
    assert res.code == 0, res.err
    assert re.search(rf"^tiny: writing {re.escape(str(src))}: \d+ s$", res.err, re.M), res.err
    res = cli("convert", "--src", str(src), "--out", str(out), "--precision", "bf16")
    assert res.code == 0, res.err
    lines = re.findall(r"^convert: ([\d.]+) MB of ([\d.]+) MB \((\d+)%\), \d+ MB/s", res.err, re.M)
    assert lines and lines[-1][2] == "100" and lines[-1][0] == lines[-1][1], res.err
    res = cli("verify", str(out))
    assert res.code == 0, res.err
    assert re.search(rf"^verify: checking {re.escape(str(out))}: \d+ s$", res.err, re.M), res.err
    assert "verify:" not in res.out


def _free_port(avoid=()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


@pytest.mark.slow
def test_piped_run_shows_every_long_stage_and_reports_the_smoke_checks(tmp_path):
    port = _free_port()
    master = _free_port({port, port + 1})
    args = ["tiny/glm5-cpu", "--set", f"model.path={tmp_path / 'source'}", "--set", f"convert.output={tmp_path / 'out'}",
            "--set", f"serve.port={port}", "--set", f"serve.master_port={master}", "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "ASCEND_PROGRESS_S": "0.2", "PYTHONUNBUFFERED": "1"}
    env.pop("ASCEND_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "ascend", "run", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for start in ("source: writing the tiny checkpoint", "convert: ", "verify: checking", "serve: waiting for readiness"):
        assert any(line.startswith(start) for line in proc.stderr.splitlines()), (start, proc.stderr[-3000:])
    report = (tmp_path / "run" / "report.txt").read_text()
    checks = json.loads((tmp_path / "run" / "smoke.json").read_text())["checks"]
    assert len(checks) >= 10
    for check in checks:
        assert re.search(rf"^\s+{check['name']}\s+{check['status']}\b", report, re.M), (check["name"], report)
