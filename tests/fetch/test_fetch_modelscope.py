"""`fetch` with the real modelscope client against the local hub in conftest.py."""

from __future__ import annotations

import hashlib
import json
import os

from fake_modelscope import MODEL_ID

from ascend.fetch import RECORD_NAME, fetch, verify_local
from ascend.fetch.completeness import BAD_SHA256, MISSING, OK

SHARD = "model-00002-of-00003.safetensors"


def _fetch(hub, out, **kw):
    return fetch(MODEL_ID, local_dir=out, endpoint=hub.endpoint, **kw)


def _same_as_hub(hub, out):
    for path, data in hub.files.items():
        assert (out / path).read_bytes() == data, path


def test_fetch_downloads_everything_and_pins_the_listing(hub, tmp_path):
    out = tmp_path / "out"
    result = _fetch(hub, out)
    assert result.complete, result.report.summary()
    assert result.revision == "master"  # ModelScope's default branch
    _same_as_hub(hub, out)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["model_id"] == MODEL_ID and record["revision"] == "master" and record["complete"]
    assert record["files"][SHARD] == {
        "size": len(hub.files[SHARD]),
        "sha256": hashlib.sha256(hub.files[SHARD]).hexdigest(),
    }

    # A second run over a complete folder lists, stats, and downloads nothing.
    hub.requests.clear()
    again = _fetch(hub, out)
    assert again.complete and again.requested == []
    assert [r for r in hub.requests if r[0] == "get"] == []


def test_interrupted_transfer_is_resumed_by_range(hub, tmp_path):
    hub.faults[SHARD] = ["cut"]  # the server closes the connection half-way through once
    result = _fetch(hub, tmp_path / "out", checksum=True)
    assert result.complete, result.report.summary()
    ranges = hub.downloads(SHARD)
    half = len(hub.files[SHARD]) // 2
    assert ranges == [None, f"bytes={half}-"]  # resumed from the received bytes, not restarted
    _same_as_hub(hub, tmp_path / "out")


def test_persistent_interruption_reports_partial_file_then_rerun_resumes(hub, tmp_path):
    out = tmp_path / "out"
    # More cuts than the client's retries (patched to 2): this run must give up on the shard.
    hub.faults[SHARD] = ["cut"] * 10
    first = _fetch(hub, out)
    assert not first.complete
    assert first.download_error and SHARD in first.download_error
    bad = {f.path: f for f in first.report.problems}
    assert list(bad) == [SHARD]
    assert bad[SHARD].state == MISSING and bad[SHARD].partial_bytes > 0
    assert json.loads((out / RECORD_NAME).read_text())["complete"] is False

    # Offline says the same thing, from the pinned listing.
    offline, _ = verify_local(out)
    assert [f.path for f in offline.problems] == [SHARD]

    partial = bad[SHARD].partial_bytes
    hub.faults.clear()
    hub.requests.clear()
    second = _fetch(hub, out, checksum=True)
    assert second.complete, second.report.summary()
    assert second.requested == [SHARD]  # only the unfinished file
    assert hub.downloads(SHARD) == [f"bytes={partial}-"]  # resumed from the partial file
    _same_as_hub(hub, out)


def test_corrupted_download_is_rejected_then_redownloaded(hub, tmp_path):
    out = tmp_path / "out"
    hub.faults[SHARD] = ["corrupt"] * 10  # right length, wrong bytes: sha256 differs from the listing
    first = _fetch(hub, out)
    assert not first.complete
    assert [f.path for f in first.report.problems] == [SHARD]
    assert "hash" in first.download_error.lower() or "sha" in first.download_error.lower()
    assert not (out / SHARD).exists()  # never left looking finished

    hub.faults.clear()
    second = _fetch(hub, out, checksum=True)
    assert second.complete and second.report.checked_sha256 == len(hub.files)
    _same_as_hub(hub, out)


def test_corruption_on_disk_is_found_by_checksum_and_repaired(hub, tmp_path):
    out = tmp_path / "out"
    assert _fetch(hub, out).complete
    data = bytearray((out / SHARD).read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the tensor data: size and header still fine
    (out / SHARD).write_bytes(bytes(data))

    sizes_only, _ = verify_local(out)
    assert sizes_only.complete  # a size check cannot see a flipped bit ...
    hashed, _ = verify_local(out, checksum=True)
    assert [(f.path, f.state) for f in hashed.problems] == [(SHARD, BAD_SHA256)]  # ... sha256 does

    repaired = _fetch(hub, out, checksum=True)
    assert repaired.removed == [SHARD] and repaired.requested == [SHARD]
    assert repaired.complete
    _same_as_hub(hub, out)


def test_checksum_reads_every_file_each_run(hub, tmp_path):
    out = tmp_path / "out"
    first = _fetch(hub, out, checksum=True)
    # The modelscope client verified sha256 while streaming: this call read nothing twice.
    assert first.complete and first.report.hashed_now == 0
    again = _fetch(hub, out, checksum=True)  # nothing to download: every file is read, once
    assert again.complete and again.requested == [] and again.report.hashed_now == len(hub.files)
    offline, _ = verify_local(out, checksum=True)
    assert offline.complete and offline.checked_sha256 == offline.hashed_now == len(hub.files)


def test_checksum_catches_bit_rot_behind_an_unchanged_mtime(hub, tmp_path):
    """Bit rot (or a corrupt `cp -a` copy) keeps size and mtime: --checksum must still see it."""
    out = tmp_path / "out"
    assert _fetch(hub, out, checksum=True).complete
    assert verify_local(out, checksum=True)[0].complete
    path = out / SHARD
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -a` or `touch -r` would leave it
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size

    report, _ = verify_local(out, checksum=True)
    assert [(f.path, f.state) for f in report.problems] == [(SHARD, BAD_SHA256)]
    assert "sha256 verified" not in report.summary()
    repaired = _fetch(hub, out, checksum=True)
    assert repaired.removed == [SHARD] and repaired.complete
    _same_as_hub(hub, out)


def test_changed_hub_file_with_same_size_is_refetched(hub, tmp_path):
    out = tmp_path / "out"
    assert _fetch(hub, out).complete
    # The branch moves: same length, different bytes (only the listing's sha256 shows it).
    new = bytearray(hub.files["config.json"])
    new[2] = ord("X") if new[2] != ord("X") else ord("Y")
    hub.files["config.json"] = bytes(new)
    result = _fetch(hub, out)
    assert result.requested == ["config.json"] and result.complete
    assert any("changed" in n for n in result.notes)
    assert (out / "config.json").read_bytes() == bytes(new)


def test_include_limits_the_download_and_the_check(hub, tmp_path):
    out = tmp_path / "out"
    result = _fetch(hub, out, include=["*.json"])
    assert result.complete, result.report.summary()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors.index.json",
    ]
    assert sorted(f.path for f in result.report.files) == ["config.json", "model.safetensors.index.json"]


def test_offline_without_a_record_checks_headers_and_index(tmp_path, checkpoint_files):
    out = tmp_path / "hand-made"
    out.mkdir()
    for path, data in checkpoint_files.items():
        (out / path).write_bytes(data)
    report, record = verify_local(out)
    assert record is None and report.complete
    assert {f.path for f in report.files if f.state == OK} >= {SHARD}


def test_refuses_to_mix_two_models_in_one_directory(hub, tmp_path):
    import pytest

    from ascend.errors import FetchError

    out = tmp_path / "out"
    assert _fetch(hub, out).complete
    record = json.loads((out / RECORD_NAME).read_text())
    record["model_id"] = "other-org/other-model"
    (out / RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(FetchError, match="already holds other-org/other-model"):
        _fetch(hub, out)
    with pytest.raises(FetchError, match="holds other-org/other-model"):
        _fetch(hub, out, offline=True)
