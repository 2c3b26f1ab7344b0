"""ascend.fileio: the one atomic-write helper every writer of the package uses."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from ascend import fileio
from ascend.errors import AscendError


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_write_atomic_and_json_write_complete_files_and_leave_no_temp(tmp_path):
    fileio.write_atomic(tmp_path / "a.bin", b"\x00\x01")
    fileio.write_atomic(tmp_path / "sub" / "b.txt", "é\n")  # str is UTF-8; parent created
    fileio.write_json(tmp_path / "c.json", {"k": [1, "ü"]}, indent=1, sort_keys=True)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_bytes() == "é\n".encode()
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == {"k": [1, "ü"]}
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_an_os_error_is_one_line_with_the_path(tmp_path, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_space(*a, **k):
        raise full

    monkeypatch.setattr(fileio, "fsync_file", no_space)
    with pytest.raises(AscendError) as err:
        fileio.write_json(tmp_path / "x.json", {})
    assert err.value.line() == f"no space left on the device writing {tmp_path / 'x.json'} — free space and rerun"
    assert not (tmp_path / "x.json").exists() and _leftovers(tmp_path) == []
    # a parent that is a file: mkdir fails, same one-line error (not a traceback)
    (tmp_path / "f").write_text("")
    with pytest.raises(AscendError, match="cannot write"):
        fileio.write_atomic(tmp_path / "f" / "y.json", "{}")


def test_temp_names_are_hidden_and_unique_per_process(tmp_path):
    t = fileio.temp_path(tmp_path / "a.json")
    assert t.parent == tmp_path and t.name == f".a.json.{os.getpid()}.tmp"
    assert fileio.temp_path(tmp_path / "m.ckpt", ".ckpt").name.endswith(".tmp.ckpt")


def _slow_writer(target: str, started, release) -> None:
    with fileio.atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(b"A" * 1000)
        f.flush()
        started.set()
        release.wait(30)
        f.write(b"A" * 1000)


def test_two_processes_writing_one_file_never_mix(tmp_path):
    """A second process writing the same file while the first is half-way: each rename is of a
    complete file of one writer (a shared temp name would mix the two or lose a rename)."""
    target = tmp_path / "record.json"
    ctx = mp.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_slow_writer, args=(str(target), started, release))
    child.start()
    try:
        assert started.wait(30)
        fileio.write_atomic(target, b"B" * 10)
        assert target.read_bytes() == b"B" * 10
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    assert target.read_bytes() == b"A" * 2000 and _leftovers(tmp_path) == []


def test_atomic_dir_replaces_a_tree_only_when_complete(tmp_path):
    out = tmp_path / "ckpt"
    with fileio.atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("1")
    with pytest.raises(RuntimeError), fileio.atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("2")
        raise RuntimeError("interrupted")
    assert (out / "config.json").read_text() == "1" and _leftovers(tmp_path) == []
    with fileio.atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "other").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["other"]


def test_smoke_reports_to_an_unwritable_place_are_a_one_line_error(tmp_path):
    """Was a raw OSError traceback (exit 1) from smoke's own write_atomic."""
    from ascend.cli.smoke import write_reports
    from ascend.smoke import SmokeReport

    (tmp_path / "file").write_text("")
    with pytest.raises(AscendError, match=f"cannot write {tmp_path / 'file' / 'smoke.json'}"):
        write_reports(SmokeReport("http://127.0.0.1:1", "m"), tmp_path / "file" / "smoke.json", None)
