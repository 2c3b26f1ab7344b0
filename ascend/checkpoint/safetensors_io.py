"""Streaming safetensors reads: lazy row-range reads (writes: :mod:`.safetensors_writer`).

Memory stays bounded by what the caller asks for: reads fetch only the requested rows with
``os.pread`` (no mmap, so untouched file pages never count against the process's memory).

File format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`` padded
with spaces to a multiple of 8, then the tensor bytes; offsets are relative to the data start and
must tile the data region with no gaps.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from ascend.errors import CheckpointError, first_names
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


def file_sha256(path: str | Path, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
