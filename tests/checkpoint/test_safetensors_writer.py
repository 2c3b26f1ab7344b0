"""SafetensorsWriter: background hashing/writing gives the same bytes and sha256 as a plain write."""

from __future__ import annotations

import errno
import hashlib
import sys

import pytest
import torch
from safetensors.torch import load_file

from ascend.checkpoint import safetensors_writer as sio
from ascend.errors import ConvertError


@pytest.mark.parametrize("sink", ["direct", "buffered"])
def test_chunked_background_write_matches_safetensors_and_sha(tmp_path, monkeypatch, sink):
    monkeypatch.setattr(sio, "FLUSH_BYTES", 4096)  # exercise the write-behind path many times
    monkeypatch.setattr(sio.DirectFile, "STAGE_BYTES", 8192)  # many full stages, chunks across them
    monkeypatch.setenv("ASCEND_DIRECT_IO", "1" if sink == "direct" else "0")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 64, generator=gen)
    b = torch.randn(17, 5, generator=gen).to(torch.bfloat16)
    path = tmp_path / "w.safetensors"
    writer = sio.SafetensorsWriter(path, [("a", "F32", (300, 64)), ("b", "BF16", (17, 5))])
    if sink == "direct" and not isinstance(writer.f, sio.DirectFile):
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    assert isinstance(writer.f, sio.DirectFile if sink == "direct" else sio.BufferedFile)
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


@pytest.mark.skipif(not hasattr(sio.os, "O_DIRECT"), reason="O_DIRECT is Linux-only")
def test_direct_writes_rejected_by_the_filesystem_fall_back_to_the_page_cache(tmp_path, monkeypatch):
    """A filesystem may accept O_DIRECT at open and refuse the writes (EINVAL): the same bytes
    then go through the page cache; one that refuses it at open gets a BufferedFile."""
    import fcntl

    real_write = sio.os.write

    def picky_write(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & sio.os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(sio.os, "write", picky_write)
    monkeypatch.setattr(sio.DirectFile, "STAGE_BYTES", 8192)
    data = bytes(range(256)) * 100  # 25,600 bytes: three full stages and a tail
    path = tmp_path / "x"
    sink = sio.DirectFile(path)
    view = memoryview(data)
    while view:
        view = view[sink.write(view):]
    sink.finish()
    sink.close()
    assert path.read_bytes() == data

    def no_direct(self, path):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(sio.DirectFile, "__init__", no_direct)
    fallback = sio.open_for_write(tmp_path / "y")
    assert isinstance(fallback, sio.BufferedFile)
    fallback.close()


def test_full_disk_under_direct_io_is_one_error_and_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sio.DirectFile, "STAGE_BYTES", 8192)
    real_write = sio.os.write
    budget = [3 * 8192]  # the disk takes three stages, then is full

    def filling_write(fd, data):
        if len(data) > budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget[0] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(sio.os, "write", filling_write)
    path = tmp_path / "w.safetensors"
    writer = sio.SafetensorsWriter(path, [("a", "F32", (300, 64))])
    with pytest.raises(ConvertError, match="no space left"):
        for rows in range(0, 300, 10):
            writer.write(torch.zeros(10, 64))
        writer.commit()
    assert not path.exists() and not sio.partial_name(path).exists()
