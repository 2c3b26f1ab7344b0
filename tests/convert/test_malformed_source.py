"""`ascend convert` on a source with a malformed shard or a symlink loop: one line, exit 2."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
from convert_fixtures import file_of
from safetensors import SafetensorError, safe_open
from test_convert_cli import assert_nothing_done, assert_one_line_error, cli

EXPERT = "model.layers.1.mlp.experts.0.down_proj.weight"  # its file is the one made malformed


def rewrite_header(path, edit) -> None:
    """Replace the header of ``path`` by ``edit(header)``, keeping the data bytes."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = edit(json.loads(data[8:8 + n]))
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


@pytest.fixture
def src(ckpt_factory, tmp_path):
    d = tmp_path / "src"
    shutil.copytree(ckpt_factory("deepseek_v3", fp8=True), d)
    return d


def test_overlapping_offsets_in_a_shard(src, tmp_path, capsys):
    def overlap(header):
        a, b = "model.layers.1.mlp.experts.0.down_proj.weight", "model.layers.1.mlp.experts.1.down_proj.weight"
        header[b]["data_offsets"] = header[a]["data_offsets"]  # b reads a's bytes; b's own become a gap
        return header

    shard = file_of(src, EXPERT)
    rewrite_header(shard, overlap)
    with pytest.raises(SafetensorError):  # the official library refuses the file
        safe_open(str(shard), framework="pt")
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "bf16")
    assert_one_line_error(code, err, shard.name, "data_offsets")
    assert_nothing_done(tmp_path / "o")


@pytest.mark.parametrize("edit", ["string_entry", "list_header", "no_offsets"])
def test_malformed_entries_in_a_shard(src, tmp_path, capsys, edit):
    name = "model.layers.1.mlp.experts.0.down_proj.weight"

    def change(header):
        if edit == "list_header":
            return [header]
        if edit == "string_entry":
            header[name] = "F8_E4M3"
        else:
            del header[name]["data_offsets"]
        return header

    shard = file_of(src, EXPERT)
    rewrite_header(shard, change)
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "bf16")
    assert_one_line_error(code, err, shard.name)


def test_source_symlink_loop(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, _, err = cli(capsys, "convert", "--src", tmp_path / "a", "--out", tmp_path / "o", "--precision", "bf16")
    assert_one_line_error(code, err, str(tmp_path / "a"))
