"""Output paths a user names (``--out``, ``--run-dir``, ``convert.output``, ...), checked before
any work starts: a path that cannot be written is bad input (exit 2, one line naming the option
and the path), not a traceback halfway through a stage.

The check writes and removes a probe file in the directory (or its nearest existing ancestor):
permissions, read-only mounts and pseudo-filesystems such as /proc all answer the same way, for
root too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ascend.errors import AscendError


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a directory that exists or can be created and written; else AscendError."""
    p = Path(path).expanduser()
    where = f"{what} {path}"
    if p.exists() and not p.is_dir():
        raise AscendError(f"{where} is a file, not a directory", fix="name a directory (new or existing)")
    _probe(p, where)
    return p


def writable_file(path: str | Path, what: str) -> Path:
    """``path`` as a file that can be created (or replaced) in a writable directory; else AscendError."""
    p = Path(path).expanduser()
    where = f"{what} {path}"
    if p.is_dir():
        raise AscendError(f"{where} is a directory", fix=f"name a file, e.g. {p / 'out'}")
    _probe(p.parent, where)
    return p


def _probe(directory: Path, where: str) -> None:
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise AscendError(f"{where}: {existing} is a file, so no directory can be made under it",
                          fix="choose a path whose parent is a directory")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".ascend-probe-"):
            pass
    except OSError as err:
        raise AscendError(f"{where}: cannot write in {existing}", why=err.strerror or str(err),
                          fix="choose a directory you can write to (or fix its permissions)") from None
