"""Tiny Hugging Face checkpoints of every family for the MindSpore tests: ``ascend tiny``'s writer
(``ascend.tiny.writer``), two decoder layers plus the MTP layer with its ``embed_tokens`` /
``shared_head.head`` copies, as published (checkpoints.md §3). The writer's names, shapes and
dtypes are the ones transformers' ``save_pretrained`` writes (tests/models/test_tensors.py checks
that against transformers itself).
"""

from __future__ import annotations

import json
from pathlib import Path

from ascend.tiny.configs import FAMILIES  # noqa: F401  (re-exported for the tests)


def write_tiny_hf(directory: Path, family: str, *, layers: int = 2, seed: int = 0) -> Path:
    from ascend.tiny.writer import write_tiny_checkpoint

    return write_tiny_checkpoint(directory, family, layers=layers, seed=seed, overwrite=True)


def shard_of(directory: Path, tensor: str) -> Path:
    """The safetensors file of ``directory`` that holds ``tensor`` (from the index)."""
    return directory / json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"][tensor]


def load_hf(directory: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out
