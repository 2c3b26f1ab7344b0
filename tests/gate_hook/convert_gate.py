"""Run the real CLI in a subprocess with every converted file held at a gate (sitecustomize.py).

``Gate(tmp)``: ``env()`` for the subprocess, ``wait_started(n)`` until ``n`` processes are
writing (their pids), ``open()`` to let them go on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent
REPO = HOOK_DIR.parent.parent


class Gate:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join([str(HOOK_DIR), str(REPO), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "ASCEND_TEST_CONVERT_GATE": str(self.dir), "PYTHONUNBUFFERED": "1",
               **extra}
        env.pop("ASCEND_DEBUG", None)
        return env

    def started(self) -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in self.dir.glob("started-*"))

    def wait_started(self, n: int, proc=None, timeout: float = 120) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.started()) < n:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the process exited ({proc.returncode}) before {n} writer(s) started")
            if time.monotonic() > deadline:
                raise AssertionError(f"{n} writer(s) did not start within {timeout} s")
            time.sleep(0.05)
        return self.started()

    def open(self) -> None:
        (self.dir / "open").touch()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float = 20) -> list[int]:
    """The pids still alive after ``timeout`` seconds (empty when all died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]
