"""Source checkpoints of the conversion tests: ``ascend tiny``'s writer (``ascend.tiny.writer``)
with the FP8 scales in a file of their own, so a weight and its ``_scale_inv`` never share a
file and the converter must pair them across files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ascend.tiny.configs import FAMILIES  # noqa: F401  (re-exported for the tests)
from ascend.tiny.writer import write_tiny_checkpoint


def make_checkpoint(out: Path, family: str, **kw) -> Path:
    """``write_tiny_checkpoint(out, family, scales_apart=True, **kw)`` (``out`` may exist, empty)."""
    return write_tiny_checkpoint(out, family, scales_apart=True, overwrite=True, **kw)


def file_of(src: Path, tensor: str) -> Path:
    """The safetensors file of ``src`` that holds ``tensor`` (from the index)."""
    return src / json.loads((src / "model.safetensors.index.json").read_text())["weight_map"][tensor]
