"""Incremental atomic safetensors writes (reads: :mod:`.safetensors_io`).

The header is computed up front from the planned tensors, then tensor bytes are appended chunk
by chunk to a per-process temporary file that is fsynced and renamed only when complete. Weight
files go through direct I/O where the filesystem takes it (no page-cache copy), else through a
write-behind page-cache sink.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import functools
import hashlib
import json
import mmap
import os
import socket
import struct
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from ascend.checkpoint.safetensors_io import itemsize, numel
from ascend.errors import ConvertError
from ascend.fileio import publish


def build_header(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None = None) -> bytes:
    """Header bytes (length prefix included) for tensors stored back to back in ``entries`` order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in entries:
        size = numel(shape) * itemsize(dtype)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def data_size(entries: list[tuple[str, str, tuple[int, ...]]]) -> int:
    return sum(numel(shape) * itemsize(dtype) for _, dtype, shape in entries)


def open_for_write(path: Path):
    """The sink a weight file is written through (one place, so tests can simulate a full disk):
    a ``DirectFile`` where the filesystem takes ``O_DIRECT``, else a ``BufferedFile``."""
    if os.environ.get("ASCEND_DIRECT_IO", "1") != "0" and hasattr(os, "O_DIRECT"):
        try:
            return DirectFile(path)
        except OSError as err:
            if err.errno != errno.EINVAL:  # EINVAL: this filesystem has no O_DIRECT (tmpfs)
                raise
    return BufferedFile(path)


class BufferedFile:
    """Plain unbuffered writes through the page cache, with write-behind every ``FLUSH_BYTES``."""

    def __init__(self, path: Path):
        self.f = open(path, "wb", buffering=0)
        self.written = self.flushed = 0

    @property
    def closed(self) -> bool:
        return self.f.closed

    def fileno(self) -> int:
        return self.f.fileno()

    def write(self, view: memoryview) -> int:
        n = self.f.write(view)
        self.written += n
        if self.written - self.flushed >= FLUSH_BYTES:
            start_writeback(self.f.fileno(), self.flushed, self.written - self.flushed)
            self.flushed = self.written
        return n

    def finish(self) -> None:
        """Everything written is in the file (the caller fsyncs)."""

    def close(self) -> None:
        self.f.close()


FLUSH_BYTES = 16 << 20


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing a just-written range to disk, without waiting for it.

    Otherwise Linux holds dirty pages until they reach ``dirty_background_ratio`` (gigabytes on a
    large host) or until our fsync, so the disk idles while we compute and then the fsync stalls
    the worker. Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; elsewhere a no-op.
    """
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE; errors surface at fsync


@functools.cache
def _sync_file_range():
    """libc ``sync_file_range`` (Linux only), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


class DirectFile:
    """Writes that bypass the page cache (``O_DIRECT``), staged in an aligned buffer.

    Copying gigabytes into the page cache is the costliest part of a conversion on many hosts
    (measured on a 2-core VM: 2 CPU-seconds per GB, as much as the FP8 dequantization), and a
    1.5 TB output would only evict everything else from it. Direct writes need aligned memory,
    sizes and offsets: data is copied into a page-aligned ``STAGE_BYTES`` buffer and written
    whenever it is full; ``finish`` writes the tail padded to ``ALIGN`` and truncates the file to
    its real size. A filesystem that accepts the flag but rejects the writes (EINVAL) gets the
    flag cleared and the same bytes written through the page cache.
    """

    ALIGN = 4096  # a multiple of every device's logical block size
    STAGE_BYTES = 8 << 20

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        self.stage = mmap.mmap(-1, self.STAGE_BYTES)  # anonymous maps are page-aligned
        self.view = memoryview(self.stage)
        self.fill = 0  # bytes staged
        self.size = 0  # bytes accepted
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def write(self, view: memoryview) -> int:
        n = min(len(view), self.STAGE_BYTES - self.fill)
        self.view[self.fill:self.fill + n] = view[:n]
        self.fill += n
        self.size += n
        if self.fill == self.STAGE_BYTES:
            self._drain(self.STAGE_BYTES)
        return n

    def _drain(self, nbytes: int) -> None:
        done = 0
        while done < nbytes:
            try:
                done += os.write(self.fd, self.view[done:nbytes])
            except OSError as err:
                if err.errno != errno.EINVAL or not _clear_o_direct(self.fd):
                    raise
        self.fill = 0

    def finish(self) -> None:
        tail = self.fill
        if tail:
            padded = tail + (-tail % self.ALIGN)
            self.view[tail:padded] = bytes(padded - tail)
            self._drain(padded)
            os.ftruncate(self.fd, self.size)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            self.view.release()
            try:
                self.stage.close()
            except BufferError:  # a slice still referenced (by an error's traceback): freed with it
                pass


def _clear_o_direct(fd: int) -> bool:
    """Turn ``O_DIRECT`` off on ``fd``; False if it was not on."""
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_DIRECT:
        return False
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
    return True


def partial_name(path: Path) -> Path:
    """``<name>.<host>-<pid>.partial``: unique per process, also across the hosts of a shared
    filesystem, so two writers of one file never rename or delete each other's temp file."""
    return path.with_name(f"{path.name}.{_HOST}-{os.getpid()}.partial")


_HOST = socket.gethostname().split(".")[0] or "host"


class SafetensorsWriter:
    """Write one safetensors file incrementally and atomically.

    The header is written first from the planned ``entries`` (name, dtype, shape); the caller
    then appends each tensor's bytes in the same order with ``write``. ``commit`` checks that
    exactly the planned bytes arrived, fsyncs, renames ``<name>.partial`` to ``<name>`` and
    returns (size, sha256). Until then only the ``.partial`` file exists.

    Hashing and writing run on one background thread (both release the GIL), so the caller
    computes the next chunk meanwhile; at most ``IN_FLIGHT`` chunks wait for it, which bounds
    the extra memory. A chunk handed to ``write`` must not be modified afterwards. An I/O error
    surfaces on the next ``write`` or on ``commit``. The bytes go to disk through
    ``open_for_write``'s sink: direct I/O where the filesystem allows it, else the page cache
    with write-behind.
    """

    IN_FLIGHT = 2

    def __init__(self, path: str | Path, entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.tmp = partial_name(self.path)
        self.header = build_header(entries, metadata)
        self.expected = len(self.header) + data_size(entries)
        self.sha = hashlib.sha256()
        self.written = 0  # bytes accepted by the sink (background thread)
        self.queued = 0  # bytes handed to write()
        self.f = open_for_write(self.tmp)
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ascend-write")
        self.pending: collections.deque[Future] = collections.deque()
        self.write(self.header)

    def write(self, data: bytes | bytearray | memoryview | torch.Tensor) -> None:
        view = memoryview(tensor_bytes(data) if isinstance(data, torch.Tensor) else data).cast("B")
        self.queued += len(view)
        if self.queued > self.expected:
            self.abort()
            raise ConvertError(f"internal: {self.path} got more bytes than planned")
        self.pending.append(self.io.submit(self._write_now, view))
        while len(self.pending) > self.IN_FLIGHT:
            self._settle(self.pending.popleft())

    def _write_now(self, view: memoryview) -> None:
        self.sha.update(view)
        try:
            while view:
                n = self.f.write(view)
                view = view[n:]
                self.written += n
            if self.written == self.expected:
                self.f.finish()
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ConvertError(
                    f"no space left on the device writing {self.path}",
                    why=f"{self.written} of {self.expected} bytes written",
                    fix="free space or choose another --out, then rerun (finished files are kept)",
                ) from None
            raise ConvertError(f"cannot write {self.path}", why=err.strerror) from None

    def _settle(self, fut: Future) -> None:
        try:
            fut.result()
        except BaseException:
            self.abort()
            raise

    def commit(self) -> tuple[int, str]:
        while self.pending:
            self._settle(self.pending.popleft())
        if self.written != self.expected:
            self.abort()
            raise ConvertError(f"internal: {self.path} got {self.written} bytes, planned {self.expected}")
        self.io.shutdown()
        try:
            os.fsync(self.f.fileno())
        except OSError as err:
            self.abort()
            raise ConvertError(f"cannot write {self.path}", why=err.strerror) from None
        self.f.close()
        publish(self.tmp, self.path)
        return self.written, self.sha.hexdigest()

    def abort(self) -> None:
        """Stop, close and delete the partial file (waits for the write in progress)."""
        self.io.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        if not self.f.closed:
            self.f.close()
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of ``t`` (made contiguous), without copying when possible."""
    t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())
