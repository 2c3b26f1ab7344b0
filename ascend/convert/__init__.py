"""Checkpoint conversion: jobs (``jobs``), per-file execution (``execute``), the resumable,
parallel pipeline (``pipeline.convert``) and ``verify``. See docs/conversion.md."""
