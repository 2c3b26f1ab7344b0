"""Streaming safetensors: lazy row-range reads and incremental atomic writes.

Memory stays bounded by what the caller asks for: reads fetch only the requested rows with
``os.pread`` (no mmap, so untouched file pages never count against the process's memory), and
writes compute the header up front from the planned tensors, then append tensor bytes chunk by
chunk to a temporary file that is fsynced and renamed only when complete.

File format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`` padded
with spaces to a multiple of 8, then the tensor bytes; offsets are relative to the data start and
must tile the data region with no gaps.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from ascend.errors import CheckpointError, ConvertError, first_names
from ascend.fileio import publish
from ascend.fetch.safetensors_header import HeaderError, parse_header, read_raw_header

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"


def itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


def numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor's bytes are: ``path`` and absolute byte range ``[start, end)``."""

    name: str
    dtype: str  # safetensors dtype string, e.g. "BF16", "F8_E4M3"
    shape: tuple[int, ...]
    path: str
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def row_bytes(self) -> int:
        return numel(self.shape[1:]) * itemsize(self.dtype)


def read_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str], bytes]:
    """Parse and validate one file's header. Returns (tensors, metadata, raw header bytes).

    Accepts exactly the files the official safetensors library loads (``parse_header``), and only
    dtypes torch has; raises CheckpointError naming the file otherwise (a truncated download
    included).
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            n, raw = read_raw_header(f)
        entries, metadata, data_len = parse_header(raw)
    except HeaderError as err:
        raise CheckpointError(f"{path} is truncated or not a valid safetensors file", why=str(err),
                              fix="re-download it (ascend fetch verifies completeness)") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}", why=err.strerror, fix="check the path and permissions") from None
    data_start = 8 + n
    if data_start + data_len != size:
        what = "is truncated" if data_start + data_len > size else "has bytes after its last tensor"
        raise CheckpointError(f"{path} {what}", why=f"its header describes {data_start + data_len} bytes, the file has {size}",
                              fix="re-download the file (ascend fetch verifies completeness)")
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        tensors[name] = TensorInfo(name, dtype, shape, path, data_start + begin, data_start + end)
    return tensors, metadata, raw


def resolve_source(path: str | Path) -> Path:
    """``path`` absolute with symlinks resolved; CheckpointError (not a crash) on a symlink loop."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: Python < 3.13's "Symlink loop"
        raise CheckpointError(f"cannot resolve the source path {path}", why=str(err),
                              fix="point --src at a real checkpoint directory (check its symlinks)") from None


class SafetensorsDir:
    """A directory of safetensors files (one file, or shards with ``*.index.json``), read lazily.

    Every tensor is located through the index (so an FP8 weight's ``_scale_inv`` may live in a
    different shard); only headers are read up front.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise CheckpointError(f"{self.dir} is not a directory", fix="pass the checkpoint directory")
        self.tensors: dict[str, TensorInfo] = {}
        self.headers: dict[str, bytes] = {}
        self.files = self._file_list()
        for fname in self.files:
            tensors, _, raw = read_header(self.dir / fname)
            self.headers[fname] = raw
            for name, info in tensors.items():
                if name in self.tensors:
                    raise CheckpointError(f"tensor {name} appears in two files", why=f"{self.tensors[name].path} and {info.path}")
                self.tensors[name] = info
        self._check_index()
        self._fds: dict[str, int] = {}

    def _index_path(self) -> Path | None:
        indexes = sorted(self.dir.glob("*.safetensors.index.json"))
        return indexes[0] if indexes else None

    def _file_list(self) -> list[str]:
        index = self._index_path()
        if index is not None:
            try:
                self.weight_map: dict[str, str] | None = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"{index} is not a valid safetensors index", why=str(err)) from None
            files = sorted(set(self.weight_map.values()))
            missing = [f for f in files if not (self.dir / f).is_file()]
            if missing:
                raise CheckpointError(
                    f"{len(missing)} shard file(s) named in {index.name} are missing",
                    why=first_names(missing),
                    fix="download the missing shards (ascend fetch resumes)",
                )
            return files
        self.weight_map = None
        files = sorted(p.name for p in self.dir.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no *.safetensors files in {self.dir}", fix="point --src at a Hugging Face checkpoint directory")
        return files

    def _check_index(self) -> None:
        if self.weight_map is None:
            return
        for name, fname in self.weight_map.items():
            info = self.tensors.get(name)
            if info is None or Path(info.path).name != fname:
                raise CheckpointError(
                    f"tensor {name} is listed in the index under {fname} but is not in that file",
                    fix="re-download the checkpoint or rebuild its index",
                )

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def read_rows(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``[start, stop)`` along dim 0 of tensor ``name`` (all of a 0-/1-D tensor if stop is None)."""
        info = self.tensors[name]
        if not info.shape:
            begin, end, shape = info.start, info.end, ()
        else:
            stop = info.shape[0] if stop is None else stop
            begin = info.start + start * info.row_bytes
            end = info.start + stop * info.row_bytes
            shape = (stop - start, *info.shape[1:])
        buf = bytearray(end - begin)
        view = memoryview(buf)
        fd, pos = self._fd(info.path), begin
        while pos < end:
            got = os.preadv(fd, [view[pos - begin:]], pos)
            if got <= 0:
                raise CheckpointError(f"{info.path} is truncated", why=f"tensor {name} could not be read at byte {pos}")
            pos += got
        if not buf:
            return torch.empty(shape, dtype=DTYPES[info.dtype])
        return torch.frombuffer(buf, dtype=torch.uint8).view(DTYPES[info.dtype]).reshape(shape)

    def read(self, name: str) -> torch.Tensor:
        return self.read_rows(name)

    def fingerprint(self) -> str:
        """sha256 over file names, sizes, headers and config.json: changes if any tensor moves,
        changes shape or dtype, or a file is replaced by one of a different size. (Hashing every
        byte of a 1.5 TB source would cost as much as the conversion.)"""
        h = hashlib.sha256()
        for fname in self.files:
            h.update(f"{fname}:{os.path.getsize(self.dir / fname)}:".encode())
            h.update(self.headers[fname])
        config = self.dir / "config.json"
        if config.is_file():
            h.update(config.read_bytes())
        return h.hexdigest()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


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


def file_sha256(path: str | Path, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
