"""Start a node's ranks, wait until the service is ready, watch it, stop it.

One process per rank (its own process group), one log file per rank. Ready means rank 0's log
shows ``Brpc Server started on port`` (any case) **and** ``GET /health`` answers 200, as
xLLM's docs prescribe. If any rank exits, all are stopped and the error names the rank, its
exit code and the end of its log. Stopping is SIGTERM, then SIGKILL after a grace period.

Library use (the smoke stage)::

    with Service(build_deployment(recipe), log_dir="runs/x/logs") as svc:
        run_checks(svc.base_url, svc.served_model)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import httpx

from ascend.errors import ServeError
from ascend.fileio import write_json
from ascend.procs import DirLock, child_dies_with_me, dir_lock
from ascend.serve.xllm import CPU_ENGINE_BINARY, Deployment
from ascend.serve.xllm_flags import READY_LINE

GRACE_S = 15.0  # xLLM's own launcher waits 15 s after SIGTERM


def readiness_timeout(model_dir: str | Path, *, configured: int | None = None) -> float:
    """Seconds to wait for readiness: the recipe's ``serve.startup_timeout_s``, else 5 minutes plus
    the checkpoint's size read at 200 MB/s (a 1.5 TB checkpoint: about 2 hours)."""
    if configured:
        return float(configured)
    size = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else 0
    return 300.0 + size / 200e6


def log_tail(path: Path, lines: int = 20) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except OSError:
        return []


class RankFailed(ServeError):
    """A rank exited; ``tail`` holds the last lines of its log for the report."""

    def __init__(self, rank: int, code: int | None, log: Path, tail: list[str], when: str):
        self.rank, self.code, self.log, self.tail = rank, code, log, tail
        last = next((line for line in reversed(tail) if line.strip()), "(empty log)")
        super().__init__(f"rank {rank} exited with code {code} {when}", why=f"last log line: {last}",
                         fix=f"see {log}")


def resolve_binary(argv0: str) -> list[str]:
    """The command prefix for ``argv[0]``: ``XLLM_BIN`` overrides the xLLM binary; the CPU engine
    falls back to this interpreter when its console script is not on PATH."""
    if argv0 == CPU_ENGINE_BINARY:
        found = shutil.which(argv0) or shutil.which(argv0, path=str(Path(sys.executable).parent))
        return [found] if found else [sys.executable, "-m", "ascend.serve.cpu_engine.main"]
    env_bin = os.environ.get("XLLM_BIN")
    candidate = env_bin or argv0
    found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
    if not found:
        raise ServeError(f"xLLM binary {candidate!r} not found", why="not on PATH and not a file",
                         fix="set serve.binary or XLLM_BIN to the xllm binary (release images: /usr/local/bin/xllm)")
    return [found]


class Service:
    """This node's ranks of a deployment, as a context manager (started and ready inside ``with``)."""

    def __init__(self, deployment: Deployment, *, node: int = 0, log_dir: str | Path = "logs",
                 timeout_s: float | None = None, grace_s: float = GRACE_S, health_host: str = "127.0.0.1"):
        self.dep = deployment
        self.node = node
        self.log_dir = Path(log_dir)
        self.timeout_s = timeout_s if timeout_s is not None else readiness_timeout(deployment.model_dir)
        self.grace_s = grace_s
        self.procs: dict[int, subprocess.Popen] = {}
        self.logs: dict[int, Path] = {}
        self.base_url = f"http://{health_host}:{deployment.port}"
        self._log_seen = False  # readiness line found in rank 0's log
        self._log_offset = 0
        self._lock: DirLock | None = None

    @property
    def served_model(self) -> str:
        return self.dep.served_model

    @property
    def serves_http(self) -> bool:
        return any(r.rank == 0 for r in self.dep.node_ranks(self.node))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        ranks = self.dep.node_ranks(self.node)
        if not ranks:
            raise ServeError(f"node {self.node} has no ranks in this deployment ({len(self.dep.hosts)} nodes)")
        # One service per log directory: a second one would truncate this one's rank logs.
        self._lock = dir_lock(self.log_dir, "ascend serve").acquire()
        base_env = {k: v for k, v in os.environ.items() if k not in self.dep.unset_env}
        try:
            self._write_rank_table()
            for r in ranks:
                prefix = resolve_binary(r.argv[0])
                log_path = self.log_dir / f"rank-{r.rank}.log"
                with open(log_path, "wb") as log:
                    # Ranks die with this process (kill -9 included), so none is left holding the ports.
                    self.procs[r.rank] = subprocess.Popen(
                        r.wrapper + prefix + r.argv[1:], env={**base_env, **r.env}, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=child_dies_with_me())
                self.logs[r.rank] = log_path
        except BaseException:
            self.stop()
            raise

    def _write_rank_table(self) -> None:
        path = self.dep.rank_table_path
        if not path:
            return
        if self.dep.rank_table is None or self.dep.rank_table_given:  # the given file was read from there
            if not Path(path).is_file():
                raise ServeError(f"rank table {path} does not exist",
                                 fix="set serve.device_ips (from `hccn_tool -i N -ip -g`) or serve.rank_table")
            return
        write_json(path, self.dep.rank_table)  # a regular file, never a symlink (xLLM refuses those)

    def check_ranks(self, when: str) -> None:
        """Raise RankFailed (after stopping everything) if any rank has exited."""
        for rank, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                self.stop()
                raise RankFailed(rank, code, self.logs[rank], log_tail(self.logs[rank]), when)

    def ready(self) -> bool:
        if not self.serves_http:
            return True  # another node's rank 0 serves HTTP
        if not self._log_seen and not self._scan_rank0_log():
            return False
        return health_ok(self.base_url)

    def _scan_rank0_log(self) -> bool:
        """Look for the readiness line in what rank 0 logged since the last look."""
        log = self.logs.get(0)
        if log is None:
            return False
        with open(log, "rb") as f:
            f.seek(max(0, self._log_offset - len(READY_LINE)))  # a line may straddle two reads
            chunk = f.read()
            self._log_offset = f.tell()
        self._log_seen = READY_LINE.lower().encode() in chunk.lower()
        return self._log_seen

    def wait_ready(self, stop_requested=lambda: False) -> bool:
        """True once ready; False if ``stop_requested()`` turned true first; raises on failure/timeout."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.check_ranks("before the service was ready")
            if self.ready():
                return True
            if stop_requested():
                return False
            if time.monotonic() > deadline:
                self.stop()
                tail = log_tail(self.logs.get(min(self.logs), Path("-"))) if self.logs else []
                last = next((line for line in reversed(tail) if line.strip()), "(empty log)")
                raise ServeError(f"the service was not ready after {self.timeout_s:.0f} s",
                                 why=f"rank 0's last log line: {last}",
                                 fix="raise serve.startup_timeout_s if loading is just slow; see the rank logs in "
                                 f"{self.log_dir}")
            time.sleep(0.2)

    def wait(self, stop_requested=lambda: False) -> None:
        """Block until a rank exits (RankFailed) or ``stop_requested()`` turns true (then stop)."""
        while not stop_requested():
            self.check_ranks("while serving")
            time.sleep(0.2)
        self.stop()

    def stop(self) -> dict[int, int | None]:
        """Stop every rank: SIGTERM rank 0 first (it releases the followers), then the others;
        SIGKILL whatever is left after the grace period. Returns ``{rank: exit code}``."""
        deadline = time.monotonic() + self.grace_s
        first = [p for r, p in self.procs.items() if r == 0 and p.poll() is None]
        for proc in first:
            _signal_group(proc, signal.SIGTERM)
            _wait(proc, deadline)
        rest = [p for p in self.procs.values() if p.poll() is None]
        for proc in rest:
            _signal_group(proc, signal.SIGTERM)
        for proc in rest:
            _wait(proc, deadline)
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return {r: p.returncode for r, p in self.procs.items()}

    def __enter__(self) -> "Service":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait(proc: subprocess.Popen, deadline: float) -> None:
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def health_ok(base_url: str) -> bool:
    """``GET base_url/health`` answers 200 (never through an HTTP proxy)."""
    try:
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            return client.get(f"{base_url}/health").status_code == 200
    except httpx.HTTPError:
        return False
