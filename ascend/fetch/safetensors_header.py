"""The safetensors header: parsed and validated as the reference implementation does.

Layout (safetensors spec): 8-byte little-endian u64 ``N``, then ``N`` bytes of UTF-8 JSON
mapping tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative
to the byte after the header), optionally ``"__metadata__"`` (a string-to-string map), then the
data. The tensors' byte ranges, sorted, must tile the data exactly: no gap, no overlap, and each
range as long as its shape and dtype say. A whole file is exactly ``8 + N + data length`` bytes.

``parse_header`` accepts exactly what the official ``safetensors`` library (0.8) accepts, so a
file it would refuse to load is refused here too, before anything is converted or downloaded
twice. No torch here: ``ascend fetch`` uses it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

# The reference implementation refuses headers above 100 MB; a larger N means garbage bytes.
MAX_HEADER_BYTES = 100_000_000

# Bits per element of every dtype the reference implementation knows.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "F64": 64, "I64": 64, "U64": 64, "C64": 64,
}


class HeaderError(ValueError):
    """The file does not start with a valid safetensors header."""


def _u64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")  # Python's json would accept NaN/Infinity


def parse_header(raw: bytes) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str], int]:
    """Validate header bytes. Returns ({name: (dtype, shape, begin, end)}, metadata, data length).

    Raises HeaderError naming the first problem.
    """
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise HeaderError(f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise HeaderError(f"header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderError("__metadata__ is not a map of strings")
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise HeaderError(f"tensor {name!r} is described by a {type(entry).__name__}, not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise HeaderError(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_u64(d) for d in shape):
            raise HeaderError(f"tensor {name!r} has bad shape {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_u64(v) for v in offsets):
            raise HeaderError(f"tensor {name!r} has bad data_offsets {offsets!r}")
        tensors[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    end = 0
    for name, (dtype, shape, begin, stop) in sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != end or stop < begin:
            raise HeaderError(f"tensor {name!r} has data_offsets [{begin}, {stop}]; the previous tensor ends at {end}"
                              " (tensors must be stored back to back, without gaps or overlaps)")
        bits = DTYPE_BITS[dtype]
        for d in shape:
            bits *= d
        if bits % 8 or bits // 8 != stop - begin:
            raise HeaderError(f"tensor {name!r} spans {stop - begin} bytes, but shape {list(shape)} {dtype} "
                              f"needs {bits / 8:g}")
        end = stop
    return tensors, metadata, end


def read_raw_header(fh) -> tuple[int, bytes]:
    """(N, header bytes) from an open file at offset 0; HeaderError when cut off or implausible."""
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise HeaderError(f"only {len(prefix)} bytes, no 8-byte header length")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len == 0 or header_len > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {header_len} is not plausible")
    raw = fh.read(header_len)
    if len(raw) < header_len:
        raise HeaderError(f"header cut off: {len(raw)} of {header_len} bytes present")
    return header_len, raw


def expected_length(path: Path) -> int:
    """Total byte length the header of ``path`` promises; raises HeaderError if invalid."""
    with open(path, "rb") as fh:
        header_len, raw = read_raw_header(fh)
    return 8 + header_len + parse_header(raw)[2]
