"""Process hygiene shared by convert, fetch, run and serve.

- :func:`dir_lock`: one writer per directory. An ``flock`` on a lock file inside the directory,
  held for the whole run; the kernel drops it when the holder exits, even on ``kill -9``, so a
  stale lock never blocks a rerun. The holder's pid is written into the lock file for the
  message the second process prints (exit 2).
- :func:`die_with_parent`: a child (a rank, a conversion worker) asks Linux to kill it when its
  parent dies, so ``kill -9`` of the parent leaves no orphan holding ports or writing files.
- :func:`ignore_sigint_in`, :func:`sigint_deferred`: start helper processes that ignore Ctrl-C,
  and start children without losing track of one, so the parent stops them all itself.

Shared filesystems: on Linux NFS (v3 with lockd, v4) ``flock`` is carried out as a whole-file
POSIX lock on the server, so it excludes writers on other hosts too. Filesystems mounted with
host-local locks (NFS ``local_lock=flock``/``all``, Lustre ``localflock``, some FUSE mounts)
only exclude writers on the same host.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ascend.errors import AscendError

LOCK_NAME = ".ascend.lock"


class Busy(AscendError):
    """Another process holds the directory's lock."""


class DirLock:
    """An ``flock`` on ``path`` (created if needed); ``shared`` lets several holders in at once.
    Locks conflict per open file, so a second lock of one file conflicts even in one process."""

    def __init__(self, path: Path, what: str, where: Path, *, shared: bool = False):
        self.path, self.what, self.where, self.shared = Path(path), what, where, shared
        self.file = None

    def acquire(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # never truncates a holder's pid before we own the lock
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise Busy(f"another {self.what} (pid {pid}) is writing here: {self.where}",
                       fix="wait for it to finish or stop it, or choose another directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def dir_lock(directory: str | Path, what: str, *, name: str = LOCK_NAME, shared: bool = False) -> DirLock:
    """The lock of ``directory`` (file ``name`` inside it), not yet taken: use ``with``."""
    directory = Path(directory)
    return DirLock(directory / name, what, directory, shared=shared)


PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl():
    return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """In a child: get ``sig`` when the parent dies (Linux; elsewhere a no-op).

    Linux sends the signal when the *thread* that forked this process exits, so fork such
    children from a thread that lives as long as they should (the main thread). If the parent
    died before this call, exit now.
    """
    prctl = _prctl()
    if prctl is None:
        return
    prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def child_dies_with_me(sig: int = signal.SIGKILL):
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process dies.
    libc is loaded here, in the parent, so the forked child only makes the system call."""
    parent, _ = os.getpid(), _prctl()
    return lambda: die_with_parent(parent, sig)


def ignore_sigint_in(start: Callable[[], Any]) -> Any:
    """Call ``start`` (which starts a helper process, e.g. multiprocessing's fork server) with
    SIGINT ignored: Python keeps an ignored SIGINT ignored at start-up, and so do the processes
    it forks. Ctrl-C then reaches only this process, which stops its children itself. Outside
    the main thread (no signal handling there) ``start`` runs as is."""
    if threading.current_thread() is not threading.main_thread():
        return start()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return start()
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until its end (then KeyboardInterrupt): for
    starting child processes, so the parent knows every child it must stop. Main thread only;
    elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if caught:
        raise KeyboardInterrupt
