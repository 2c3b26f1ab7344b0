"""sha256 of many large files, in parallel (hashing releases the GIL, so threads suffice).

Nothing is remembered across runs: an earlier version cached hashes keyed on size and mtime in
``.ascend-fetch-hashes.json``, which let bit rot with an unchanged (or restored) mtime pass as
verified; such a file is now ignored.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

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


class Hashes:
    """sha256 of the files of one directory, established during one ``fetch`` call.

    ``--checksum`` reads every file it vouches for: a hash from an earlier run says nothing about
    the bytes on disk now (bit rot leaves size and mtime alone; ``cp -a`` and ``touch -r``
    restore an mtime). Within one call a file is read at most once: the check after the download
    reuses the hashes read by the check before it, and the hashes the hub client verified while
    streaming the files it just wrote (see ``fetch._trust_client_hashes``).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.known: dict[str, str] = {}
        self.hashed: list[str] = []  # files actually read (tests and reports use it)

    def remember(self, rel: str, sha256: str) -> None:
        self.known[rel] = sha256.lower()

    def forget(self, rel: str) -> None:
        self.known.pop(rel, None)

    def hash_many(self, rels: Iterable[str], workers: int = 4,
                  on_bytes: Callable[[int], None] | None = None) -> dict[str, str]:
        """sha256 for each relative path: read from disk unless already known in this call."""
        rels = list(rels)
        todo = [rel for rel in rels if rel not in self.known]
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
                for rel, digest in zip(todo, pool.map(lambda r: sha256_file(self.root / r, on_bytes), todo)):
                    self.known[rel] = digest
                    self.hashed.append(rel)
        return {rel: self.known[rel] for rel in rels}
