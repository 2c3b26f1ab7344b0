"""Atomic file writes: a file (or directory) is either absent, the old one, or complete.

Everything is written under a temporary name beside the target (same filesystem, so the rename
is atomic), fsynced, renamed over the target, and the directory fsynced so the rename itself
survives a crash. Temporary names are hidden and unique per process (``.<name>.<pid>.tmp``), so
two processes writing the same target never write into each other's file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ascend.errors import AscendError


def temp_path(path: str | Path, suffix: str = "") -> Path:
    """The temporary name ``path`` is written under: ``.<name>.<pid>.tmp<suffix>`` beside it
    (``suffix`` for writers that choose the format by the file name's ending)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def fsync_file(path: str | Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    fsync_file(path)  # a directory's entries are synced through a read-only descriptor too


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename the complete (already fsynced) ``tmp`` over ``path`` and make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def write_error(path: str | Path, err: OSError) -> AscendError:
    """The one-line error for a failed write of ``path``."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return AscendError(f"no space left on the device writing {path}", fix="free space and rerun")
    return AscendError(f"cannot write {path}", why=err.strerror or str(err))


def _remove(path: Path) -> None:
    """Best-effort cleanup of a temporary file or directory (never raises)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink()
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path for a writer that creates the file itself (``save_file``, a
    streaming writer); when the block ends without error, fsync it and rename it to ``path``.
    On error the temporary file is removed and ``path`` is untouched; an ``OSError`` becomes a
    one-line ``AscendError``. The parent directory is created if missing."""
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fsync_file(tmp)
        publish(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise write_error(path, err) from None
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory path (not yet created) for a writer to fill; when the block
    ends without error it replaces ``path`` (an existing directory there is removed first). On
    error it is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = temp_path(path)
    _remove(tmp)  # left by an earlier process with the same pid
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        publish(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (``str`` is encoded as UTF-8) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False, default=None) -> None:
    """``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically."""
    write_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default, ensure_ascii=False) + "\n")
