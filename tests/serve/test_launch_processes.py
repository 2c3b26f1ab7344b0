"""The launcher's process hygiene: ranks die with a parent killed by SIGKILL (the ports are free
for a rerun), and one service per log directory. Stand-in ranks as in test_launch.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_launch import _deployment

from ascend.procs import Busy
from ascend.serve.launch import Service

LAUNCHER = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from ascend.serve.launch import Service
    from test_launch import _deployment
    from pathlib import Path
    tmp = Path(sys.argv[2])
    svc = Service(_deployment(tmp), log_dir=tmp / "logs", timeout_s=60, grace_s=5)
    svc.start()
    svc.wait_ready()
    print(json.dumps({"pids": [p.pid for p in svc.procs.values()], "port": svc.dep.port}), flush=True)
    time.sleep(600)
''')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _port_free(port: int) -> bool:
    """Bindable by a new server (which, like every server, sets SO_REUSEADDR: the health checks'
    closed connections may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_ranks_die_with_a_killed_parent_and_free_their_ports(tmp_path):
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    parent = subprocess.Popen([sys.executable, str(script), str(Path(__file__).parent), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        started = json.loads(parent.stdout.readline())
        pids, port = started["pids"], started["port"]
        assert all(_alive(p) for p in pids) and not _port_free(port)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in pids if _alive(p)] == [], "ranks outlived their launcher"
        assert _port_free(port), f"port {port} still taken after the launcher died"
    finally:
        parent.kill()
        parent.wait()
        for pid in pids:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_one_service_per_log_directory(tmp_path):
    first = Service(_deployment(tmp_path), log_dir=tmp_path / "logs", timeout_s=30, grace_s=5)
    with first:
        second = Service(_deployment(tmp_path), log_dir=tmp_path / "logs", timeout_s=30, grace_s=5)
        try:
            with pytest.raises(Busy, match=f"another ascend serve \\(pid {os.getpid()}\\) is writing here"):
                second.start()
        finally:
            second.stop()
        assert not second.procs  # nothing started, no log truncated
        assert "rank 0 starting" in (tmp_path / "logs" / "rank-0.log").read_text()
    with Service(_deployment(tmp_path), log_dir=tmp_path / "logs", timeout_s=30, grace_s=5):
        pass  # released by stop()
