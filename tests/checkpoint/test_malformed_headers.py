"""Malformed safetensors headers: refused exactly when the official library refuses them.

The oracle is ``safetensors.safe_open`` (the reference implementation): every malformed file
here is first shown to be refused by it, then by our reader (one-line CheckpointError naming the
file) and by fetch's header check. Files the library accepts, odd but valid, are accepted too.
"""

from __future__ import annotations

import json
import struct

import pytest
from safetensors import SafetensorError, safe_open

from ascend.checkpoint.safetensors_io import read_header
from ascend.errors import CheckpointError
from ascend.fetch.safetensors_header import HeaderError, expected_length


def blob(header=None, data: bytes = b"", raw: bytes | None = None) -> bytes:
    h = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def f32(offsets, shape=(2,), dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": offsets}


Z8, Z16 = b"\0" * 8, b"\0" * 16
MALFORMED = {
    "negative_offset": blob({"a": f32([-8, 0]), "b": f32([0, 8])}, Z8),
    "string_offsets": blob({"a": f32(["0", "8"])}, Z8),
    "float_offsets": blob({"a": f32([0.0, 8.0])}, Z8),
    "bool_offset": blob({"a": f32([False, 8])}, Z8),
    "three_offsets": blob({"a": f32([0, 8, 8])}, Z8),
    "overlapping_offsets": blob({"a": f32([0, 8]), "b": f32([0, 8])}, Z8),
    "partly_overlapping_offsets": blob({"a": f32([0, 8]), "b": f32([4, 12], shape=(2,))}, b"\0" * 12),
    "gap_between_tensors": blob({"a": f32([0, 8]), "b": f32([16, 24])}, b"\0" * 24),
    "begin_after_end": blob({"a": f32([8, 0])}, Z8),
    "missing_data_offsets": blob({"a": {"dtype": "F32", "shape": [2]}}, Z8),
    "header_is_a_list": blob([{"a": f32([0, 8])}], Z8),
    "entry_is_a_string": blob({"a": "F32"}, Z8),
    "size_disagrees_with_shape": blob({"a": f32([0, 8], shape=(3,))}, Z8),
    "unknown_dtype": blob({"a": f32([0, 8], dtype="F7")}, Z8),
    "negative_dim": blob({"a": f32([0, 8], shape=(-2,))}, Z8),
    "bool_dim": blob({"a": f32([0, 8], shape=(True, 2))}, Z8),
    "metadata_not_strings": blob({"__metadata__": {"format": 1}, "a": f32([0, 8])}, Z8),
    "metadata_a_list": blob({"__metadata__": ["pt"], "a": f32([0, 8])}, Z8),
    "nan_in_json": blob(raw=b'{"__metadata__":{"x":NaN},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', data=Z8),
    "not_json": blob(raw=b"{nope"),
    "not_utf8": blob(raw=b'{"\xff":1}'),
    "empty_header": struct.pack("<Q", 0),
    "header_length_past_eof": struct.pack("<Q", 1000) + b'{"a":1}',
    "shorter_than_8_bytes": b"\0\0\0",
    "data_shorter_than_offsets": blob({"a": f32([0, 8])}, b"\0" * 4),
    "bytes_after_last_tensor": blob({"a": f32([0, 8])}, Z16),
}
# Odd but valid: the official library loads these, so must we.
VALID = {
    "plain": blob({"a": f32([0, 8])}, Z8),
    "no_tensors": blob({}),
    "metadata": blob({"__metadata__": {"format": "pt"}, "a": f32([0, 8])}, Z8),
    "unordered_offsets": blob({"b": f32([8, 16]), "a": f32([0, 8])}, Z16),
    "empty_tensors_share_offsets": blob({"e": f32([0, 0], shape=(0,)), "f": f32([0, 0], shape=(0, 3)), "a": f32([0, 8])}, Z8),
    "unknown_field": blob({"a": {**f32([0, 8]), "extra": 1}}, Z8),
    "space_padding": blob(raw=b' {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   ', data=Z8),
}


def official_keys(path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return sorted(f.keys())


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_refused_like_the_official_library(case, tmp_path):
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(MALFORMED[case])
    with pytest.raises(SafetensorError):  # the oracle refuses it
        official_keys(path)
    with pytest.raises(CheckpointError) as err:
        read_header(path)
    line = err.value.line()
    assert str(path) in line and "\n" not in line
    if case not in ("data_shorter_than_offsets", "bytes_after_last_tensor"):
        # fetch reports these two as SHORT / LONG from the length the header promises
        with pytest.raises(HeaderError):
            expected_length(path)


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_header_is_read_like_the_official_library(case, tmp_path):
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(VALID[case])
    tensors, _, _ = read_header(path)
    assert sorted(tensors) == official_keys(path)
    assert expected_length(path) == path.stat().st_size
    with safe_open(str(path), framework="pt") as f:
        for name, info in tensors.items():
            assert tuple(f.get_slice(name).get_shape()) == info.shape
