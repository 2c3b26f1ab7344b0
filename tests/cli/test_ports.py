"""A port already taken is named, with its owner, before any rank starts (`ascend serve`,
`ascend run`), instead of surfacing later as a dead rank. The check is doctor's."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager

import pytest

from ascend.doctor import LocalHost


@contextmanager
def listening():
    """A TCP listener on 127.0.0.1 (as a server binds it: SO_REUSEADDR); yields its port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


def test_doctor_names_the_owner_and_ignores_time_wait():
    host = LocalHost()
    with listening() as server:
        port = server.getsockname()[1]
        assert host.port_in_use(port)
        assert host.port_owner(port).startswith(f"pid {os.getpid()} (")
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end stays in TIME_WAIT
        client.close()
    # what a stopped `ascend serve` leaves behind; the engines rebind it (SO_REUSEADDR)
    assert not host.port_in_use(port)
    assert host.port_owner(port) is None


def test_serve_refuses_a_taken_http_port_naming_its_owner(cli, tmp_path, fake_model):
    with listening() as server:
        port = server.getsockname()[1]
        res = cli("serve", "tiny/glm5-cpu", "--set", f"serve.port={port}", "--set", f"serve.master_port={free_port()}",
                  "--set", f"convert.output={fake_model}", "--log-dir", str(tmp_path / "logs"))
    assert res.code == 2, res.err
    line = res.err.strip().splitlines()[-1]
    assert f"{port} (pid {os.getpid()} (" in line and "already in use" in line and "--set serve.port=" in line
    assert not (tmp_path / "logs" / "rank-0.log").exists()  # no rank was started


def test_run_refuses_a_taken_master_port(cli, tmp_path, fake_model):
    with listening() as server:
        master = server.getsockname()[1]
        res = cli("run", "tiny/glm5-cpu", "--from", "serve", "--run-dir", str(tmp_path / "run"),
                  "--set", f"serve.port={free_port()}", "--set", f"serve.master_port={master}",
                  "--set", f"convert.output={fake_model}")
    assert res.code == 2, res.err
    assert f"{master} (pid {os.getpid()} (" in res.err
    assert not (tmp_path / "run" / "logs" / "rank-0.log").exists()
