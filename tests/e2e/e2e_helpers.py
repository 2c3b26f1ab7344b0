"""Helpers for end-to-end tests: the real `ascend` CLI in a subprocess, in a scratch directory,
on free ports (so parallel test runs and other engineers' servers never collide)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def report(self) -> dict:
        return json.loads(self.out)


def ascend(*args: str, cwd: Path, timeout: float = 400) -> Run:
    """Run ``python -m ascend ARGS`` (the installed entry point's code) in ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ASCEND_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "ascend", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def recipe_args(name: str, work: Path) -> list[str]:
    """A built-in tiny recipe with its paths under ``work`` and fresh ports."""
    port = free_port()
    master = free_port()
    while master in (port, port + 1):
        master = free_port()
    return [
        f"tiny/{name}",
        "--set", f"model.path={work / 'source'}",
        "--set", f"convert.output={work / 'converted'}",
        "--set", f"serve.port={port}",
        "--set", f"serve.master_port={master}",
        "--run-dir", str(work / "run"),
    ]
