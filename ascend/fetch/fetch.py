"""Download a checkpoint and prove it is whole; or, offline, prove what is on disk is whole.

Flow of :func:`fetch` (online):
  1. list the revision's files on the hub (size, sha256) — the pin;
  2. check the local dir against that listing (sizes, safetensors header lengths, index shards,
     sha256 with ``checksum``, every file read);
  3. delete files at their final name that are wrong (short, too long, bad header, wrong sha256,
     or whose hub sha256 changed since the last fetch), then ask the hub client for exactly the
     files that are not complete — so a finished 1.5 TB folder costs one listing and a stat per file,
     and an interrupted one resumes (modelscope-hub resumes ``*.incomplete`` files by HTTP Range);
  4. write ``.ascend-fetch.json`` (source, id, revision, commit, the listing) and check again.
Steps 2-4 hold the directory's lock (``.cache/ascend-fetch.lock``): one fetch per directory.

Offline (:func:`fetch` with ``offline=True`` or :func:`verify_local`) uses the listing pinned in
``.ascend-fetch.json`` when present, else index files and safetensors headers only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ascend.errors import FetchError
from ascend.fetch.completeness import (
    BAD_HEADER,
    BAD_SHA256,
    LONG,
    OK,
    SHORT,
    CompletenessReport,
    RemoteFile,
    check_dir,
    matches_any,
)
from ascend.fetch.hashing import Hashes
from ascend.fetch.hubs import DownloadFailed, Listing, make_hub
from ascend.fileio import write_json
from ascend.procs import dir_lock

RECORD_NAME = ".ascend-fetch.json"
LOCK_NAME = ".cache/ascend-fetch.lock"  # under .cache: never taken for a model file, nor copied by convert

# A file at its final name in any of these states is removed before the download: the hub
# clients resume from their own partial files (``*.incomplete``), never from the final name, and
# huggingface_hub would otherwise keep a short file its metadata calls up to date.
_REPLACE = (SHORT, LONG, BAD_HEADER, BAD_SHA256)


@dataclass
class FetchResult:
    model_id: str | None
    source: str
    local_dir: str
    revision: str | None
    commit: str | None
    offline: bool
    report: CompletenessReport
    requested: list[str] = field(default_factory=list)  # files handed to the hub client this run
    removed: list[str] = field(default_factory=list)  # local files deleted as unrecoverable
    download_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.report.complete

    def to_dict(self) -> dict:
        return {
            "model_id": self.model_id,
            "source": self.source,
            "local_dir": self.local_dir,
            "revision": self.revision,
            "commit": self.commit,
            "offline": self.offline,
            "complete": self.complete,
            "requested": self.requested,
            "removed": self.removed,
            "download_error": self.download_error,
            "notes": self.notes,
            "report": self.report.to_dict(),
        }


def read_record(local_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(local_dir) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def listing_fingerprint(files: dict[str, RemoteFile]) -> str:
    text = "\n".join(f"{p}\t{f.size}\t{f.sha256 or ''}" for p, f in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _write_record(local_dir: Path, model_id: str, source: str, listing: Listing, include: list[str], complete: bool) -> None:
    record = {
        "version": 1,
        "source": source,
        "model_id": model_id,
        "revision": listing.revision,
        "commit": listing.commit,
        "endpoint": listing.endpoint,
        "include": include,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": complete,
        "listing_sha256": listing_fingerprint(listing.files),
        "files": {p: {"size": f.size, "sha256": f.sha256} for p, f in sorted(listing.files.items())},
    }
    write_json(local_dir / RECORD_NAME, record, indent=1)


def _record_listing(record: dict) -> dict[str, RemoteFile]:
    return {
        p: RemoteFile(p, v.get("size"), v.get("sha256"))
        for p, v in record["files"].items()
        if isinstance(v, dict)
    }


def verify_local(
    local_dir: str | Path,
    *,
    include: Iterable[str] = (),
    checksum: bool = False,
    hash_workers: int = 4,
    progress: Callable | None = None,
) -> tuple[CompletenessReport, dict | None]:
    """Offline check of ``local_dir`` (against its pinned listing when it has one)."""
    local_dir = Path(local_dir)
    record = read_record(local_dir)
    remote = _record_listing(record) if record else None
    include = list(include) or list((record or {}).get("include") or [])
    report = check_dir(local_dir, remote, include=include, checksum=checksum, hash_workers=hash_workers, **_hooks(progress))
    return report, record


# Hub ids: ORG/NAME (Hugging Face also has a few bare names); letters, digits, `_`, `.`, `-`.
_MODEL_ID = re.compile(r"(?:[A-Za-z0-9_][\w.-]*/)?[A-Za-z0-9_][\w.-]*")


def check_model_id(model_id: str) -> None:
    """Refuse what no hub can hold before any network call (which would only time out)."""
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise FetchError(f"{model_id!r} is not a hub model id",
                         fix="give ORG/NAME, e.g. ZhipuAI/GLM-5-FP8 (ModelScope) or zai-org/GLM-5-FP8 (Hugging Face)")


def fetch(
    model_id: str,
    *,
    local_dir: str | Path,
    source: str = "modelscope",
    revision: str | None = None,
    include: Iterable[str] = (),
    offline: bool = False,
    checksum: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    max_workers: int = 4,
    hash_workers: int = 4,
    progress: Callable | None = None,
) -> FetchResult:
    """Make ``local_dir`` a complete copy of ``model_id`` at ``revision``; report what is not.

    ``progress`` (optional) is a hashing progress hook ``progress(kind, n)`` with kind
    ``"total"`` or ``"advance"``; hub client bars show only when it is given.
    """
    check_model_id(model_id)
    local_dir = Path(local_dir)
    include = list(include)
    hub = make_hub(source, endpoint, token)

    if offline:
        report, record = verify_local(local_dir, include=include, checksum=checksum, hash_workers=hash_workers, progress=progress)
        notes = []
        if record is None:
            notes.append(f"no {RECORD_NAME}: checked index files and safetensors headers only (no hub sizes or sha256)")
        elif record.get("model_id") not in (None, model_id):
            raise FetchError(
                f"{local_dir} holds {record.get('model_id')}, not {model_id}",
                fix="pass the right --local-dir, or fetch online into an empty directory",
            )
        return FetchResult(
            model_id, source, str(local_dir), (record or {}).get("revision") or revision,
            (record or {}).get("commit"), True, report, notes=notes,
        )

    revision = revision or hub.default_revision
    listing = hub.list_files(model_id, revision)
    wanted = {p: f for p, f in listing.files.items() if matches_any(p, include)}
    if not wanted:
        raise FetchError(
            f"{model_id}@{revision} lists no files matching {include or ['*']}",
            fix="check --include patterns (fnmatch on repository paths, e.g. '*.safetensors')",
        )
    notes: list[str] = []
    record = read_record(local_dir)
    stale: set[str] = set()
    if record is not None:
        if record.get("model_id") not in (None, model_id):
            raise FetchError(
                f"{local_dir} already holds {record.get('model_id')}, not {model_id}",
                fix="use an empty --local-dir for a different model",
            )
        old = _record_listing(record)
        if record.get("listing_sha256") != listing_fingerprint(listing.files):
            changed = [p for p, f in wanted.items() if p in old and (old[p].size, old[p].sha256) != (f.size, f.sha256)]
            stale = set(changed)
            notes.append(
                f"the hub's file list for {revision} changed since {record.get('fetched_at')}"
                f" ({len(changed)} files differ); bringing the folder up to date"
            )

    local_dir.mkdir(parents=True, exist_ok=True)
    with dir_lock(local_dir, "ascend fetch", name=LOCK_NAME):
        return _fetch_into(local_dir, hub, model_id, revision, listing, wanted, include, stale, notes, checksum,
                           max_workers, hash_workers, progress)


def _fetch_into(local_dir: Path, hub, model_id: str, revision: str, listing: Listing, wanted: dict[str, RemoteFile],
                include: list[str], stale: set[str], notes: list[str], checksum: bool, max_workers: int,
                hash_workers: int, progress: Callable | None) -> FetchResult:
    """Steps 2-4 of the flow, under the directory's lock."""
    hashes = Hashes(local_dir)
    before = check_dir(local_dir, wanted, include=include, checksum=checksum, hash_workers=hash_workers,
                       hashes=hashes, **_hooks(progress))
    removed = []
    for f in before.files:
        if f.path in wanted and (f.state in _REPLACE or (f.path in stale and f.state == OK)):
            (local_dir / f.path).unlink(missing_ok=True)
            hashes.forget(f.path)
            removed.append(f.path)
    need = sorted({f.path for f in before.problems if f.path in wanted} | set(removed))

    download_error = None
    if need:
        try:
            hub.download(model_id, listing, str(local_dir), need, max_workers, progress is not None)
        except DownloadFailed as err:
            download_error = str(err)
        if hub.verifies_sha256:
            _trust_client_hashes(hashes, {p: wanted[p] for p in need})

    after = check_dir(local_dir, wanted, include=include, checksum=checksum, hash_workers=hash_workers,
                      hashes=hashes, **_hooks(progress))
    after.hashed_now = len(hashes.hashed)  # every file this call read, before and after the download
    _write_record(local_dir, model_id, hub.name, listing, include, after.complete)
    return FetchResult(
        model_id, hub.name, str(local_dir), revision, listing.commit, False, after,
        requested=need, removed=removed, download_error=download_error, notes=notes + listing.notes,
    )


def _trust_client_hashes(hashes: Hashes, downloaded: dict[str, RemoteFile]) -> None:
    """Take the sha256 the hub client verified while streaming the files it just wrote.

    modelscope-hub hashes every byte it writes and refuses to rename a file whose sha256 differs
    from the listing, so a file now at the listed size carries the listed hash; taking it saves
    reading every new file again in this same call's final check.
    """
    for rel, rf in downloaded.items():
        path = hashes.root / rel
        if rf.sha256 and rf.size is not None and path.is_file() and path.stat().st_size == rf.size:
            hashes.remember(rel, rf.sha256)


def _hooks(progress: Callable | None) -> dict:
    if progress is None:
        return {}
    return {
        "on_hash_total": lambda n: progress("total", n),
        "on_hash_bytes": lambda n: progress("advance", n),
    }
