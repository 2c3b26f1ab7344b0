"""Offline completeness: safetensors header lengths, index shards, hub sizes."""

from __future__ import annotations

import json
import struct

import pytest
from fake_modelscope import make_checkpoint

from ascend.fetch.completeness import BAD_HEADER, LONG, MISSING, OK, SHORT, RemoteFile, check_dir
from ascend.fetch.safetensors_header import HeaderError, expected_length

SHARD = "model-00002-of-00003.safetensors"


@pytest.fixture
def ckpt(tmp_path):
    root = tmp_path / "ckpt"
    make_checkpoint(root)
    return root


def test_expected_length_matches_files_written_by_safetensors(ckpt):
    for path in ckpt.glob("*.safetensors"):
        assert expected_length(path) == path.stat().st_size


def test_expected_length_rejects_garbage(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00" * 4)
    with pytest.raises(HeaderError, match="8-byte"):
        expected_length(bad)
    bad.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(HeaderError, match="not plausible"):
        expected_length(bad)
    bad.write_bytes(struct.pack("<Q", 50) + b"{" * 10)
    with pytest.raises(HeaderError, match="cut off"):
        expected_length(bad)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(HeaderError, match="data_offsets"):
        expected_length(bad)


def test_complete_checkpoint_passes(ckpt):
    report = check_dir(ckpt)
    assert report.complete
    assert report.index_files == ["model.safetensors.index.json"]
    assert {f.path for f in report.files} == {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}


def test_truncated_shard_is_short_by_its_header(ckpt):
    path = ckpt / SHARD
    full = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-100])
    (check,) = check_dir(ckpt).problems
    assert (check.path, check.state, check.actual_size, check.expected_size) == (SHARD, SHORT, full - 100, full)


def test_appended_bytes_are_long(ckpt):
    with open(ckpt / SHARD, "ab") as fh:
        fh.write(b"junk")
    assert [(f.path, f.state) for f in check_dir(ckpt).problems] == [(SHARD, LONG)]


def test_unreadable_header_and_missing_shard(ckpt):
    (ckpt / SHARD).write_bytes(b"<html>rate limited</html>" * 10)
    (ckpt / "model-00003-of-00003.safetensors").unlink()
    states = {f.path: f.state for f in check_dir(ckpt).problems}
    assert states == {SHARD: BAD_HEADER, "model-00003-of-00003.safetensors": MISSING}


def test_msmodelslim_index_names_its_shards(tmp_path):
    root = tmp_path / "w8a8"
    make_checkpoint(root, shards=2)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    (root / "model.safetensors.index.json").unlink()
    index["weight_map"]["model.layers.9.mlp.experts.0.down_proj.weight"] = "quant_model_weight_w8a8_dynamic-00003-of-00003.safetensors"
    (root / "quant_model_weight_w8a8_dynamic.safetensors.index.json").write_text(json.dumps(index))
    report = check_dir(root)
    assert report.index_files == ["quant_model_weight_w8a8_dynamic.safetensors.index.json"]
    assert [(f.path, f.state) for f in report.problems] == [
        ("quant_model_weight_w8a8_dynamic-00003-of-00003.safetensors", MISSING)
    ]


def test_hub_size_wins_over_header_and_covers_non_safetensors(ckpt):
    cfg = (ckpt / "config.json").stat().st_size
    remote = {
        "config.json": RemoteFile("config.json", cfg + 1),
        "tokenizer.json": RemoteFile("tokenizer.json", 10),
        SHARD: RemoteFile(SHARD, (ckpt / SHARD).stat().st_size),
    }
    states = {f.path: f.state for f in check_dir(ckpt, remote).files}
    assert states["config.json"] == SHORT and states["tokenizer.json"] == MISSING and states[SHARD] == OK


def test_empty_or_absent_directory_is_not_complete(tmp_path):
    assert not check_dir(tmp_path / "nope").complete
    (tmp_path / "empty").mkdir()
    assert not check_dir(tmp_path / "empty").complete
