"""Progress of long stages (convert, fetch, tiny generation, verify, the serve readiness wait).

Everything goes to stderr. On a terminal: a live bar (byte counts) or a spinner with the elapsed
time, both erased when done. Anywhere else (CI, ``| tee``, a log file): one plain line every
``interval_s()`` seconds, so a piped run is never silent for long and its log stays readable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Callable, Iterator

DEFAULT_INTERVAL_S = 15.0


def interval_s() -> float:
    """Seconds between plain progress lines (``ASCEND_PROGRESS_S`` overrides the default 15)."""
    try:
        return max(0.0, float(os.environ.get("ASCEND_PROGRESS_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def on_terminal() -> bool:
    return sys.stderr.isatty()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


class ByteProgress:
    """Bytes done of a known total, with rate and time left."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, total, 0
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if on_terminal():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.bar = Progress(what, BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                transient=True, console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(what, total=total)

    def set_total(self, total: int) -> None:
        self.total, self.done = total, 0
        if self.bar is not None:
            self.bar.update(self.task, total=total, completed=0)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)
            return
        now = time.monotonic()
        if now - self.last >= interval_s():
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = f", ~{(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.total >= self.done else ""
            pct = f" ({self.done / self.total:.0%})" if self.total else ""
            _say(f"{self.what}: {_size(self.done)} of {_size(self.total)}{pct}, {rate / 1e6:.0f} MB/s{left}")

    def drain(self, queue) -> None:
        """Add up what worker processes put on ``queue`` since the last call."""
        import queue as queue_mod

        n = 0
        while True:
            try:
                n += queue.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                break
        if n:
            self.advance(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextlib.contextmanager
def heartbeat(what: str, detail: Callable[[], str] | None = None, *, spinner: bool = True) -> Iterator[None]:
    """For work without a byte count: ``what`` with the elapsed seconds (and ``detail()``, e.g.
    a log's last line), as a spinner on a terminal (unless ``spinner`` is false: the work shows
    its own bars there) or as a plain line every ``interval_s()`` seconds elsewhere."""
    terminal = on_terminal()
    if terminal and not spinner:
        yield
        return
    stop = threading.Event()
    t0 = time.monotonic()

    def text() -> str:
        extra = ""
        if detail is not None:
            with contextlib.suppress(Exception):  # a detail is a nicety; never let it end the wait
                extra = detail()
        return f"{what}: {time.monotonic() - t0:.0f} s" + (f"; {extra}" if extra else "")

    status = None
    if terminal:
        from rich.console import Console

        status = Console(stderr=True).status(what)
        status.start()

    def beat() -> None:
        if status is None and interval_s() == 0:  # ASCEND_PROGRESS_S=0: every step, the start included
            _say(text())
        while not stop.wait(1.0 if terminal else max(0.1, interval_s())):
            if status is not None:
                status.update(text())
            else:
                _say(text())

    thread = threading.Thread(target=beat, name="ascend-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if status is not None:
            status.stop()
