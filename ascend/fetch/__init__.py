"""Verified downloads from ModelScope / Hugging Face, and offline completeness checks.

Library entry points take plain arguments (no recipe needed):
``fetch(model_id, local_dir=..., source=..., revision=..., include=..., offline=..., checksum=...)``
and ``verify_local(local_dir, checksum=...)``; both return a ``CompletenessReport`` listing every
missing, short, too-long, unreadable or mismatching file.
"""

from ascend.fetch.completeness import CompletenessReport, FileCheck, RemoteFile, check_dir
from ascend.fetch.fetch import RECORD_NAME, FetchResult, fetch, read_record, verify_local
from ascend.fetch.hubs import SOURCES

__all__ = [
    "RECORD_NAME",
    "SOURCES",
    "CompletenessReport",
    "FetchResult",
    "FileCheck",
    "RemoteFile",
    "check_dir",
    "fetch",
    "read_record",
    "verify_local",
]
