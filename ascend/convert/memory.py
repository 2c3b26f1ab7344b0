"""How much memory a conversion needs: the chunk size and the peak-RSS bound, in one place.

Torch-free, so ``ascend doctor`` can check a host's RAM against the same numbers the converter
is built to (docs/conversion.md, "Memory bound").
"""

from __future__ import annotations

import os

# fp32 working rows per chunk; smaller chunks cost no speed down to a few MiB (measured), larger
# ones only add memory
CHUNK_BYTES = int(os.environ.get("ASCEND_CONVERT_CHUNK_MB", "32")) << 20
RUNTIME_BYTES = 300 * 10**6  # one Python process with torch loaded (and a writer's 8 MiB staging buffer)


def peak_rss_bytes(workers: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Upper bound on a safetensors conversion's peak RSS (all processes), independent of
    checkpoint size: the main process plus, per worker, its runtime, about six chunks of tensor
    data (source bytes, fp32 values, result, two results queued for the writer). Measured
    1.1 GB for 2 workers against this bound's 1.3 GB (tools/bench_convert.py)."""
    return RUNTIME_BYTES + workers * worker_bytes(chunk_bytes)


def worker_bytes(chunk_bytes: int = CHUNK_BYTES) -> int:
    """What each conversion worker adds to the peak."""
    return RUNTIME_BYTES + 6 * chunk_bytes
