"""Is a checkpoint directory whole? Sizes from the hub listing, lengths from safetensors headers,
the shard list from every ``*.safetensors.index.json``, and (optionally) sha256 from the hub.

The check never trusts "the folder is not empty" (what ModelScope's ``local_files_only`` does),
nor a hash from an earlier run (see ``hashing.Hashes``).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ascend.fetch.hashing import Hashes
from ascend.fetch.safetensors_header import HeaderError, expected_length

# Files this toolkit or the hub clients keep next to the weights; never part of the model.
INTERNAL_NAMES = (".ascend-fetch.json", ".ascend-fetch-hashes.json")
INTERNAL_DIRS = (".cache", "._____temp", ".git")
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp", ".tmp")

# Index files name the shards: the HF one and msModelSlim's (e.g.
# quant_model_weight_w8a8_dynamic.safetensors.index.json); any "*.safetensors.index.json" counts.
INDEX_GLOB = "*.safetensors.index.json"

OK = "ok"
MISSING = "missing"
SHORT = "short"  # fewer bytes than the hub lists or the header promises (interrupted download)
LONG = "long"  # more bytes than expected (appended garbage, wrong file)
BAD_HEADER = "bad_header"
BAD_SHA256 = "bad_sha256"


@dataclass(frozen=True)
class RemoteFile:
    """One file as the hub lists it (size in bytes; sha256 when the hub publishes it)."""

    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass
class FileCheck:
    path: str
    state: str
    expected_size: int | None = None
    actual_size: int | None = None
    detail: str = ""
    partial_bytes: int | None = None  # bytes already in a resumable partial file, if any


@dataclass
class CompletenessReport:
    root: str
    files: list[FileCheck] = field(default_factory=list)
    checked_sha256: int = 0
    hashed_now: int = 0  # files read by this check (the rest were read or verified earlier in the same fetch)
    index_files: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[FileCheck]:
        return [f for f in self.files if f.state != OK]

    @property
    def complete(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.complete:
            extra = f", sha256 verified for {self.checked_sha256}" if self.checked_sha256 else ""
            return f"{len(self.files)} files complete{extra}"
        counts: dict[str, int] = {}
        for f in self.problems:
            counts[f.state] = counts.get(f.state, 0) + 1
        parts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(counts.items()))
        return f"{len(self.problems)} of {len(self.files)} files not complete ({parts})"

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "complete": self.complete,
            "summary": self.summary(),
            "index_files": self.index_files,
            "checked_sha256": self.checked_sha256,
            "hashed_now": self.hashed_now,
            "files": [asdict(f) for f in self.files],
        }


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    patterns = list(patterns)
    return not patterns or any(fnmatch.fnmatch(path, p) for p in patterns)


def _is_internal(rel: str) -> bool:
    parts = rel.split("/")
    return (
        parts[-1] in INTERNAL_NAMES
        or any(p in INTERNAL_DIRS for p in parts[:-1])
        or parts[-1].endswith(PARTIAL_SUFFIXES)
    )


def local_files(root: Path) -> list[str]:
    """Relative paths of the model files under ``root`` (toolkit/client metadata excluded)."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if not _is_internal(rel):
                out.append(rel)
    return out


def index_shards(root: Path) -> tuple[list[str], set[str]]:
    """(index files found, shard files they name). Unreadable index -> CheckpointError-like ValueError."""
    indexes = sorted(p.relative_to(root).as_posix() for p in root.rglob(INDEX_GLOB) if p.is_file())
    shards: set[str] = set()
    for rel in indexes:
        if _is_internal(rel):
            continue
        try:
            data = json.loads((root / rel).read_text())
            weight_map = data["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{root / rel}: not a readable safetensors index ({err})") from None
        base = Path(rel).parent
        for shard in set(weight_map.values()):
            shards.add((base / shard).as_posix())
    return [r for r in indexes if not _is_internal(r)], shards


def _partial_bytes(path: Path) -> int | None:
    for suffix in PARTIAL_SUFFIXES[:1]:  # the resumable one (.incomplete, modelscope-hub)
        partial = path.with_name(path.name + suffix)
        if partial.exists():
            return partial.stat().st_size
    return None


def check_dir(
    root: Path,
    remote: dict[str, RemoteFile] | None = None,
    *,
    include: Iterable[str] = (),
    checksum: bool = False,
    hash_workers: int = 4,
    on_hash_bytes: Callable[[int], None] | None = None,
    on_hash_total: Callable[[int], None] | None = None,
    hashes: Hashes | None = None,
) -> CompletenessReport:
    """Check ``root`` against the hub listing ``remote`` (path -> RemoteFile), if known.

    Expected files: every listed file matching ``include`` (all if empty), plus every shard named
    by an index file. Without a listing (offline, hand-made folder) the expected set is the
    index shards plus the safetensors files present, and lengths come from the headers.
    ``checksum`` compares sha256 with the listing for files whose size is already right, reading
    every such file except those whose hash ``hashes`` already holds from this same fetch call.
    """
    root = Path(root)
    include = list(include)
    report = CompletenessReport(root=str(root))
    if not root.is_dir():
        expected_paths = sorted(p for p in (remote or {}) if matches_any(p, include))
        report.files = [FileCheck(p, MISSING, remote[p].size) for p in expected_paths] or [
            FileCheck(str(root), MISSING, detail="directory does not exist")
        ]
        return report

    index_files, shards = index_shards(root)
    report.index_files = index_files
    expected: dict[str, RemoteFile] = {}
    if remote is not None:
        for path, rf in remote.items():
            if matches_any(path, include):
                expected[path] = rf
    for shard in shards:
        if matches_any(shard, include):
            expected.setdefault(shard, (remote or {}).get(shard) or RemoteFile(shard))
    for rel in local_files(root):
        if rel.endswith(".safetensors") and matches_any(rel, include):
            expected.setdefault(rel, (remote or {}).get(rel) or RemoteFile(rel))

    checks: dict[str, FileCheck] = {}
    for rel in sorted(expected):
        rf = expected[rel]
        path = root / rel
        if not path.is_file():
            check = FileCheck(rel, MISSING, rf.size, None, partial_bytes=_partial_bytes(path))
            if remote is not None and rel not in remote:
                check.detail = "named by an index file but not in the hub's listing"
            checks[rel] = check
            continue
        actual = path.stat().st_size
        check = FileCheck(rel, OK, rf.size, actual)
        if rf.size is not None and actual != rf.size:
            check.state = SHORT if actual < rf.size else LONG
            check.detail = f"{actual} of {rf.size} bytes (hub listing)"
            check.partial_bytes = _partial_bytes(path)
        elif rel.endswith(".safetensors"):
            try:
                want = expected_length(path)
            except HeaderError as err:
                check.state, check.detail = BAD_HEADER, str(err)
            else:
                if check.expected_size is None:
                    check.expected_size = want
                if actual != want:
                    check.state = SHORT if actual < want else LONG
                    check.detail = f"{actual} bytes, header says {want}"
        checks[rel] = check

    if checksum:
        to_hash = [r for r, c in checks.items() if c.state == OK and expected[r].sha256]
        hashes = hashes or Hashes(root)
        read_before = len(hashes.hashed)
        if on_hash_total is not None:
            on_hash_total(sum(checks[r].actual_size or 0 for r in to_hash if r not in hashes.known))
        digests = hashes.hash_many(to_hash, workers=hash_workers, on_bytes=on_hash_bytes)
        report.checked_sha256 = len(to_hash)
        report.hashed_now = len(hashes.hashed) - read_before
        for rel in to_hash:
            want = expected[rel].sha256.lower()
            if digests[rel] != want:
                checks[rel].state = BAD_SHA256
                checks[rel].detail = f"sha256 {digests[rel][:12]}… but the hub lists {want[:12]}…"

    if not checks:
        checks["*.safetensors"] = FileCheck(
            "*.safetensors", MISSING, detail="no weights: no safetensors file and no index found"
        )
    report.files = [checks[r] for r in sorted(checks)]
    return report
