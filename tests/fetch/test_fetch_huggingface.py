"""`fetch --source huggingface` with the real huggingface_hub client against a local hub."""

from __future__ import annotations

import hashlib
import json

import pytest

from ascend.fetch import RECORD_NAME, fetch, verify_local

pytest.importorskip("huggingface_hub")

from fake_huggingface import COMMIT, FakeHuggingFace  # noqa: E402

REPO = "tiny-org/tiny-moe-hf"
SHARD = "model-00002-of-00003.safetensors"


@pytest.fixture
def hf_hub(checkpoint_files, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    server = FakeHuggingFace(checkpoint_files, REPO)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


def test_huggingface_fetch_pins_the_commit_and_verifies(hf_hub, tmp_path):
    out = tmp_path / "out"
    result = fetch(REPO, source="huggingface", local_dir=out, endpoint=hf_hub.endpoint, checksum=True)
    assert result.complete, result.report.summary()
    assert result.revision == "main" and result.commit == COMMIT
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["commit"] == COMMIT and record["files"][SHARD]["sha256"] == hashlib.sha256(hf_hub.files[SHARD]).hexdigest()
    for path, data in hf_hub.files.items():
        assert (out / path).read_bytes() == data
    # downloads went to the pinned commit, not the moving branch
    assert {r[1] for r in hf_hub.requests} <= set(hf_hub.files)


def test_huggingface_local_truncation_is_found_and_refetched(hf_hub, tmp_path):
    out = tmp_path / "out"
    assert fetch(REPO, source="huggingface", local_dir=out, endpoint=hf_hub.endpoint).complete
    (out / SHARD).write_bytes(hf_hub.files[SHARD][:100])  # a copy cut short
    report, _ = verify_local(out)
    assert [(f.path, f.state) for f in report.problems] == [(SHARD, "short")]
    again = fetch(REPO, source="huggingface", local_dir=out, endpoint=hf_hub.endpoint, checksum=True)
    assert again.requested == [SHARD] and again.complete
    assert (out / SHARD).read_bytes() == hf_hub.files[SHARD]


def test_huggingface_interrupted_transfer_completes(hf_hub, tmp_path):
    hf_hub.faults[SHARD] = ["cut"]
    result = fetch(REPO, source="huggingface", local_dir=tmp_path / "out", endpoint=hf_hub.endpoint, checksum=True)
    assert result.complete, result.report.summary()
    gets = [r for r in hf_hub.requests if r[0] == "GET" and r[1] == SHARD]
    # huggingface_hub retried the cut transfer itself (it restarted from byte 0 here)
    assert len(gets) == 2
    assert (tmp_path / "out" / SHARD).read_bytes() == hf_hub.files[SHARD]
