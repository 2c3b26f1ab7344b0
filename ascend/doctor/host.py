"""What the doctor may ask of a host: run a command (with a timeout), read a file under a root,
and a few OS facts. ``LocalHost`` asks this machine; tests pass a ``ReplayHost`` built from
recorded outputs (``tests/doctor/fixtures/*``), so every parser runs on documented real output.
"""

from __future__ import annotations

import glob as _glob
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

# Where the Ascend host install puts its tools (the docs mount these into containers).
TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/local/Ascend/driver/tools")
DEFAULT_TIMEOUT_S = 20.0


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str = ""


def command_key(argv: list[str]) -> str:
    """Stable name of a command for recorded outputs ("python-probe" for the Python probe)."""
    if argv[:2] == ["python", "-c"]:
        return "python-probe"
    return " ".join([Path(argv[0]).name, *argv[1:]])


class LocalHost:
    """This machine. ``root`` re-roots file reads (e.g. a container's view of the host)."""

    def __init__(self, root: str | Path = "/", env: Mapping[str, str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.root = Path(root)
        self.env = dict(os.environ if env is None else env)
        self.timeout_s = timeout_s

    # -- commands -------------------------------------------------------------------------
    def which(self, name: str) -> str | None:
        if os.sep in name:
            return name if os.access(name, os.X_OK) else None
        found = shutil.which(name, path=self.env.get("PATH", os.defpath))
        if found:
            return found
        for d in TOOL_DIRS:
            cand = Path(d) / name
            if os.access(cand, os.X_OK):
                return str(cand)
        return None

    def run(self, argv: list[str], timeout_s: float | None = None) -> CommandResult | None:
        """Run ``argv``; None when the program does not exist. A timeout is a failed result."""
        argv = list(argv)
        if argv[0] == "python":
            argv[0] = sys.executable
        else:
            exe = self.which(argv[0])
            if exe is None:
                return None
            argv[0] = exe
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s or self.timeout_s,
                env=self.env, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"timed out after {timeout_s or self.timeout_s:.0f}s")
        except OSError as err:
            return CommandResult(126, "", str(err))
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    # -- files ----------------------------------------------------------------------------
    def path(self, abs_path: str) -> Path:
        return self.root / abs_path.lstrip("/")

    def read(self, abs_path: str) -> str | None:
        try:
            return self.path(abs_path).read_text(errors="replace")
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Absolute (host) paths matching ``pattern`` under the root."""
        base = str(self.root).rstrip("/") or "/"
        return sorted("/" + os.path.relpath(p, base).lstrip("/") for p in _glob.glob(str(self.root / pattern.lstrip("/"))))

    def exists(self, abs_path: str) -> bool:
        return self.path(abs_path).exists()

    # -- OS facts -------------------------------------------------------------------------
    def hostname(self) -> str:
        return socket.gethostname()

    def resolve(self, name: str) -> list[str]:
        """Addresses ``name`` resolves to (empty when it does not resolve)."""
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return []
        return sorted({info[4][0] for info in infos})

    def port_in_use(self, port: int) -> bool:
        """True when binding ``port`` on all interfaces fails as the engines would see it. They
        set SO_REUSEADDR (uvicorn, brpc, gloo's store), so connections left in TIME_WAIT by a
        stopped run do not count; a listening socket on any address does."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return True
        return False

    def port_owner(self, port: int) -> str | None:
        """``pid N (command)`` of the process listening on TCP ``port``, when /proc shows it
        (/proc/net/tcp{,6} give the socket's inode, /proc/<pid>/fd links name it); else None."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in (self.read(table) or "").splitlines()[1:]:
                f = line.split()  # sl local_address rem_address st ... inode
                if len(f) > 9 and f[3] == "0A" and int(f[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{f[9]}]")
        if not inodes:
            return None
        for fd in self.glob("/proc/[0-9]*/fd/*"):
            try:
                if os.readlink(self.path(fd)) not in inodes:
                    continue
            except OSError:  # gone, or another user's process
                continue
            pid = fd.split("/")[-3]
            cmd = " ".join((self.read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").split())
            return f"pid {pid}" + (f" ({cmd[:80]})" if cmd else "")
        return None

    def disk_free(self, path: str) -> tuple[str, int] | None:
        """(nearest existing ancestor, free bytes) for ``path`` on the real filesystem."""
        p = Path(path).absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            return str(p), shutil.disk_usage(p).free
        except OSError:
            return None

    # Data paths (model.path, convert.output) are real paths, never re-rooted.
    def data_exists(self, path: str) -> bool:
        return Path(path).exists()


class ReplayHost(LocalHost):
    """A recorded host: ``<dir>/root`` is its filesystem, ``<dir>/commands/<key>.txt`` its command
    outputs (``<key>.rc`` holds a non-zero exit code), ``<dir>/host.json`` its OS facts:
    ``{"env": {...}, "hostname": "...", "resolve": {"name": ["ip"]}, "ports_in_use": [...],
    "disk_free": {"/path": bytes}, "data_paths": ["/existing/path"],
    "which": {"xllm": "/usr/local/bin/xllm"}}``.
    """

    def __init__(self, fixture_dir: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S):
        fixture_dir = Path(fixture_dir)
        facts = json.loads((fixture_dir / "host.json").read_text()) if (fixture_dir / "host.json").exists() else {}
        # "base": another recorded host this one differs from (its files and facts are inherited).
        self.base = ReplayHost(fixture_dir / facts["base"], timeout_s) if facts.get("base") else None
        if self.base is not None:
            facts = {**self.base.facts, **{k: v for k, v in facts.items() if k != "base"}}
        super().__init__(fixture_dir / "root", env=facts.get("env", {}), timeout_s=timeout_s)
        self.dir = fixture_dir
        self.facts = facts
        self.calls: list[str] = []

    def path(self, abs_path: str) -> Path:
        own = self.root / abs_path.lstrip("/")
        if self.base is not None and not own.exists():
            return self.base.path(abs_path)
        return own

    def glob(self, pattern: str) -> list[str]:
        found = super().glob(pattern)
        if self.base is not None:
            found = sorted(set(found) | set(self.base.glob(pattern)))
        return found

    def _recorded(self, key: str) -> Path:
        own = self.dir / "commands" / (key.replace("/", "_").replace(" ", "_") + ".txt")
        if self.base is not None and not own.exists():
            return self.base._recorded(key)
        return own

    def which(self, name: str) -> str | None:
        return self.facts.get("which", {}).get(name)

    def run(self, argv: list[str], timeout_s: float | None = None) -> CommandResult | None:
        key = command_key(argv)
        self.calls.append(key)
        out = self._recorded(key)
        if not out.exists():
            return None
        rc_file = out.with_suffix(".rc")
        rc = int(rc_file.read_text().strip()) if rc_file.exists() else 0
        return CommandResult(rc, out.read_text(), "")

    def hostname(self) -> str:
        return self.facts.get("hostname", "localhost")

    def resolve(self, name: str) -> list[str]:
        return list(self.facts.get("resolve", {}).get(name, []))

    def port_in_use(self, port: int) -> bool:
        return port in self.facts.get("ports_in_use", [])

    def port_owner(self, port: int) -> str | None:
        return self.facts.get("port_owners", {}).get(str(port))

    def disk_free(self, path: str) -> tuple[str, int] | None:
        table = self.facts.get("disk_free", {})
        p = Path(path)
        for cand in [p, *p.parents]:
            if str(cand) in table:
                return str(cand), int(table[str(cand)])
        return None

    def data_exists(self, path: str) -> bool:
        return path in self.facts.get("data_paths", [])


def is_routable(address: str) -> bool:
    """Not loopback, link-local or unspecified (other nodes can reach it)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)
