"""The launcher with stand-in rank processes (a small Python program that behaves like xLLM ranks:
rank 0 logs the readiness line and serves /health, others idle), so failure handling is tested
without a model. The real engine is launched in test_serve_e2e.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time

import httpx
import pytest
from engine_fixtures import free_port

from ascend.errors import ServeError
from ascend.serve.launch import RankFailed, Service
from ascend.serve.xllm import Deployment, RankCommand

FAKE_RANK = textwrap.dedent('''
    import http.server, os, signal, sys, threading, time
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    rank, port = int(args["node_rank"]), int(args["port"])
    mode = os.environ.get("FAKE_MODE", "")
    print(f"rank {rank} starting", flush=True)
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "fail" and rank == 1:
        print("F1129 bad flag: --nope", flush=True)
        sys.exit(3)
    if rank == 0 and mode not in ("never_ready", "fail"):  # like xLLM: rank 0 waits for its workers
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404); self.end_headers()
            def log_message(self, *a): pass
        srv = http.server.HTTPServer(("127.0.0.1", port), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        print(f"I1129 Brpc Server started on port {port}, idle_timeout_s: -1, num_threads: 8", flush=True)
    print(f"rank {rank} serving", flush=True)
    while True:
        time.sleep(0.1)
''')


def _deployment(tmp_path, mode: str = "", ranks: int = 2, rank_table: dict | None = None) -> Deployment:
    script = tmp_path / "fake_rank.py"
    script.write_text(FAKE_RANK)
    port = free_port()
    cmds = [RankCommand(r, 0, r, [sys.executable, str(script), f"--port={port + r}", f"--node_rank={r}"],
                        {"FAKE_MODE": mode}) for r in range(ranks)]
    return Deployment("xllm", "0.10", "fake", str(tmp_path), port, ["127.0.0.1"], ranks, cmds,
                      rank_table=rank_table, rank_table_path=str(tmp_path / "rt.json") if rank_table else None)


def test_ready_then_clean_stop(tmp_path):
    dep = _deployment(tmp_path, rank_table={"version": "1.0", "status": "completed"})
    with Service(dep, log_dir=tmp_path / "logs", timeout_s=30, grace_s=5) as svc:
        assert httpx.get(svc.base_url + "/health", trust_env=False).status_code == 200
        assert json.loads((tmp_path / "rt.json").read_text())["version"] == "1.0"
        assert not (tmp_path / "rt.json").is_symlink()
        # The stand-in rank 0 is ready without waiting for rank 1, which may not have logged yet.
        deadline = time.time() + 20
        while "rank 1 serving" not in svc.logs[1].read_text() and time.time() < deadline:
            time.sleep(0.05)
        procs = list(svc.procs.values())
    assert all(p.poll() is not None for p in procs)
    assert (tmp_path / "logs" / "rank-1.log").read_text().startswith("rank 1 starting")


def test_killed_rank_brings_everything_down_with_a_report(tmp_path):
    svc = Service(_deployment(tmp_path), log_dir=tmp_path / "logs", timeout_s=30, grace_s=5)
    with svc:
        deadline = time.time() + 20
        while "rank 1 serving" not in svc.logs[1].read_text() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(svc.procs[1].pid, signal.SIGKILL)
        with pytest.raises(RankFailed) as info:
            svc.wait()
    err = info.value
    assert err.rank == 1 and err.code == -signal.SIGKILL
    assert "rank 1 serving" in err.tail and "while serving" in err.line()
    assert svc.procs[0].poll() is not None  # rank 0 was stopped too


def test_rank_failing_at_startup_is_reported(tmp_path):
    svc = Service(_deployment(tmp_path, mode="fail"), log_dir=tmp_path / "logs", timeout_s=30, grace_s=5)
    with pytest.raises(RankFailed, match="rank 1 exited with code 3 before the service was ready") as info:
        with svc:
            pass
    assert "bad flag" in info.value.line()
    assert all(p.poll() is not None for p in svc.procs.values())


def test_timeout_and_forced_kill(tmp_path):
    svc = Service(_deployment(tmp_path, mode="never_ready"), log_dir=tmp_path / "logs", timeout_s=1.5, grace_s=5)
    with pytest.raises(ServeError, match="not ready after 2 s"):
        with svc:
            pass
    stubborn = Service(_deployment(tmp_path, mode="ignore_term"), log_dir=tmp_path / "logs2", timeout_s=30, grace_s=0.5)
    stubborn.start()
    stubborn.wait_ready()
    t0 = time.monotonic()
    codes = stubborn.stop()
    assert codes == {0: -signal.SIGKILL, 1: -signal.SIGKILL} and time.monotonic() - t0 < 5


def test_missing_binary_and_rank_table(tmp_path, monkeypatch):
    dep = _deployment(tmp_path)
    dep.ranks[0].argv[0] = "no-such-xllm-binary"
    monkeypatch.delenv("XLLM_BIN", raising=False)
    with pytest.raises(ServeError, match="xLLM binary 'no-such-xllm-binary' not found"):
        Service(dep, log_dir=tmp_path / "l").start()
    dep2 = _deployment(tmp_path)
    dep2.rank_table_path = str(tmp_path / "absent.json")
    with pytest.raises(ServeError, match="rank table .* does not exist"):
        Service(dep2, log_dir=tmp_path / "l2").start()
