"""sha256 of many large files, in parallel, remembered across runs.

Hashing 1.5 TB takes hours, so a verified hash is cached in ``.ascend-fetch-hashes.json`` next to
the files, keyed by relative path and valid only while the file's size and mtime (ns) are
unchanged. Any write to a file (a redownload, a bit flip fixed by hand) changes its mtime and
forces a re-hash; nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ascend.fileio import write_json

HASH_CACHE_NAME = ".ascend-fetch-hashes.json"
_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of ``path``; ``on_bytes(n)`` is called after each chunk (for progress)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)  # releases the GIL for large buffers: threads hash in parallel
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int


def _stamp(path: Path) -> _Stamp:
    st = path.stat()
    return _Stamp(st.st_size, st.st_mtime_ns)


class HashCache:
    """Per-directory cache of file sha256 keyed by (size, mtime_ns)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / HASH_CACHE_NAME
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.hashed: list[str] = []  # files actually read this run (tests and reports use it)
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict) and isinstance(loaded.get("files"), dict):
                self._entries = loaded["files"]
        except (OSError, ValueError):
            pass

    def cached(self, rel: str) -> str | None:
        """The cached hash of ``rel`` if the file is unchanged since it was hashed."""
        entry = self._entries.get(rel)
        if not entry:
            return None
        try:
            stamp = _stamp(self.root / rel)
        except OSError:
            return None
        if entry.get("size") == stamp.size and entry.get("mtime_ns") == stamp.mtime_ns:
            return entry.get("sha256")
        return None

    def hash_many(
        self,
        rels: Iterable[str],
        workers: int = 4,
        on_bytes: Callable[[int], None] | None = None,
    ) -> dict[str, str]:
        """sha256 for each relative path, from the cache where valid, else by reading the file."""
        rels = list(rels)
        result: dict[str, str] = {}
        todo: list[str] = []
        for rel in rels:
            hit = self.cached(rel)
            if hit:
                result[rel] = hit
            else:
                todo.append(rel)

        def one(rel: str) -> tuple[str, str, _Stamp]:
            path = self.root / rel
            before = _stamp(path)
            digest = sha256_file(path, on_bytes)
            return rel, digest, before

        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
                for rel, digest, stamp in pool.map(one, todo):
                    result[rel] = digest
                    with self._lock:
                        self.hashed.append(rel)
                        self._entries[rel] = {"size": stamp.size, "mtime_ns": stamp.mtime_ns, "sha256": digest}
            self.save()
        return result

    def remember(self, rel: str, sha256: str, source: str) -> None:
        """Record a hash established elsewhere (e.g. verified by the hub client while streaming)."""
        stamp = _stamp(self.root / rel)
        with self._lock:
            self._entries[rel] = {"size": stamp.size, "mtime_ns": stamp.mtime_ns, "sha256": sha256.lower(), "source": source}

    def forget(self, rel: str) -> None:
        with self._lock:
            self._entries.pop(rel, None)

    def save(self) -> None:
        write_json(self.path, {"version": 1, "files": self._entries}, indent=1, sort_keys=True)
