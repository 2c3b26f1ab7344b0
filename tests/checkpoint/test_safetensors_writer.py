"""SafetensorsWriter: background hashing/writing gives the same bytes and sha256 as a plain write."""

from __future__ import annotations

import hashlib
import sys

import pytest
import torch
from safetensors.torch import load_file

from ascend.checkpoint import safetensors_io as sio
from ascend.errors import ConvertError


def test_chunked_background_write_matches_safetensors_and_sha(tmp_path, monkeypatch):
    monkeypatch.setattr(sio, "FLUSH_BYTES", 4096)  # exercise the write-behind path many times
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 64, generator=gen)
    b = torch.randn(17, 5, generator=gen).to(torch.bfloat16)
    path = tmp_path / "w.safetensors"
    writer = sio.SafetensorsWriter(path, [("a", "F32", (300, 64)), ("b", "BF16", (17, 5))])
    for rows in range(0, 300, 7):  # many small chunks: more than IN_FLIGHT queue up
        writer.write(a[rows:rows + 7])
    writer.write(b)
    size, sha = writer.commit()
    data = path.read_bytes()
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    loaded = load_file(path)
    assert torch.equal(loaded["a"], a) and torch.equal(loaded["b"], b)
    assert not sio.partial_name(path).exists()


def test_too_many_bytes_aborts_and_leaves_nothing(tmp_path):
    path = tmp_path / "w.safetensors"
    writer = sio.SafetensorsWriter(path, [("a", "F32", (2, 2))])
    with pytest.raises(ConvertError, match="more bytes than planned"):
        writer.write(torch.zeros(3, 2))
    assert not path.exists() and not sio.partial_name(path).exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux-only")
def test_start_writeback_finds_sync_file_range(tmp_path):
    assert sio._sync_file_range() is not None
    f = tmp_path / "x"
    f.write_bytes(b"\0" * 8192)
    with open(f, "rb+") as fh:
        sio.start_writeback(fh.fileno(), 0, 8192)  # a hint: must not raise
