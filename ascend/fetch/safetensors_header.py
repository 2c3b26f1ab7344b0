"""How long a safetensors file must be, from its own header (the only size known offline).

Layout (safetensors spec): 8-byte little-endian u64 ``N``, then ``N`` bytes of UTF-8 JSON
mapping tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative
to the byte after the header), optionally ``"__metadata__"``, then the data. A whole file is
exactly ``8 + N + max(end)`` bytes long.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# The reference implementation refuses headers above 100 MB; a larger N means garbage bytes.
MAX_HEADER_BYTES = 100_000_000


class HeaderError(ValueError):
    """The file does not start with a readable safetensors header."""


def expected_length(path: Path) -> int:
    """Total byte length the header of ``path`` promises; raises HeaderError if unreadable."""
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise HeaderError(f"only {len(prefix)} bytes, no 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len == 0 or header_len > MAX_HEADER_BYTES:
            raise HeaderError(f"header length {header_len} is not plausible")
        raw = fh.read(header_len)
    if len(raw) < header_len:
        raise HeaderError(f"header cut off: {len(raw)} of {header_len} bytes present")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HeaderError(f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(v, int) and v >= 0 for v in offsets)
            or offsets[0] > offsets[1]
        ):
            raise HeaderError(f"tensor {name!r} has bad data_offsets {offsets!r}")
        data_end = max(data_end, offsets[1])
    return 8 + header_len + data_end
