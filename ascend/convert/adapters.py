"""The seam between convert and checkpoint formats other than Hugging Face safetensors.

convert reads Hugging Face safetensors (``SafetensorsDir``) and writes the ``hf`` and ``sharded``
layouts itself. Another framework's format plugs in from ``ascend.interop`` through two small
adapters, found by name (``--from-format NAME``, ``--layout NAME``) and imported only when used:

- a ``SourceFormat`` opens its checkpoint as a ``CheckpointSource``: the tensors under their
  Hugging Face names, read by row windows, so every layout can be written from it;
- an ``OutputLayout`` plans its own files from a source, writes one of them, names the side
  files finalize writes, verifies its output and describes itself for ``--dry-run``. Its
  pieces carry ``op == NAME`` and keep the adapter's own data in ``Piece.extra``.

Names a registered format uses in a checkpoint directory (weight suffixes, bookkeeping files) are
declared here too, without importing it, so convert never copies them as side files and
``--force`` removes them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from ascend.checkpoint.safetensors_io import TensorInfo
    from ascend.convert.jobs import ConvertJobs, ConvertOptions, Piece, SourceTensor


class CheckpointSource(Protocol):
    """What convert reads a source through (``SafetensorsDir`` is the Hugging Face one)."""

    dir: Path
    tensors: dict[str, TensorInfo]  # Hugging Face name -> dtype, shape (and where, if known)

    def __contains__(self, name: str) -> bool: ...
    def read_rows(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor: ...
    def read(self, name: str) -> torch.Tensor: ...
    def fingerprint(self) -> str: ...
    def close(self) -> None: ...


class SourceFormat(Protocol):
    title: str  # for messages: "a MindSpore checkpoint"

    def load(self, src_dir: Path, opts: ConvertOptions) -> tuple[CheckpointSource, Any]:
        """(source, ModelArgs), with one-line errors for a missing extra, path or config."""

    def open(self, src_dir: str, config: str | None) -> CheckpointSource:
        """The source again, in a worker process (already checked by ``load``)."""


class OutputLayout(Protocol):
    def check(self, opts: ConvertOptions) -> None:
        """Raise a one-line error before anything is listed or written: options this layout cannot
        hold, a missing extra."""

    def build_jobs(self, src: CheckpointSource, args: Any, opts: ConvertOptions,
                   inv: dict[str, SourceTensor]) -> ConvertJobs: ...

    def write_file(self, src: CheckpointSource, path: Path, pieces: list[Piece]) -> tuple[int, str]:
        """Write one output file atomically; (size, sha256)."""

    def side_files(self, jobs: ConvertJobs) -> dict[str, Any]:
        """{file name: JSON body} finalize writes next to the weights."""

    def describe(self, opts: ConvertOptions) -> str: ...
    def describe_piece(self, piece: Piece) -> str: ...

    def verify(self, out: Path, jobs: ConvertJobs, src: CheckpointSource | None, sampled: set[tuple[str, str]],
               report: Any) -> None:
        """Add problems and notes to ``report``; ``sampled``: (file, tensor) pairs to compare with the source."""


# name -> "module:attribute" of the adapter object
_SOURCES = {"mindspore": "ascend.interop.mindspore.convert:SOURCE"}
_LAYOUTS = {"mindspore": "ascend.interop.mindspore.convert:LAYOUT"}
# names the registered formats use in checkpoint directories (MindSpore Transformers)
WEIGHT_SUFFIXES = (".ckpt",)
BOOKKEEPING_FILES = frozenset({"param_name_map.json", "hyper_param.safetensors"})


def _load(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def source_format(name: str) -> SourceFormat | None:
    """The adapter of ``--from-format name``; None for Hugging Face safetensors."""
    return _load(_SOURCES[name]) if name in _SOURCES else None


def output_layout(name: str) -> OutputLayout | None:
    """The adapter of ``--layout name``; None for convert's own layouts (hf, sharded)."""
    return _load(_LAYOUTS[name]) if name in _LAYOUTS else None


def layout_of_piece(piece: Piece) -> OutputLayout | None:
    """The adapter that made ``piece`` (None for convert's own ops: copy, dequant, fp8, w8a8)."""
    return output_layout(piece.op)
