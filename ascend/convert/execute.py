"""Run one output file of a jobs: stream source rows in chunks through the piece's transform.

Memory per worker is bounded by the chunk size, not by tensor or file size: a piece is processed
``chunk_rows`` rows at a time (a multiple of 128 so FP8 blocks stay whole), where
``chunk_rows * in_features * 4 bytes <= CHUNK_BYTES``; the resulting bound per worker is
``ascend.convert.memory.worker_bytes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ascend.checkpoint.fp8 import dequantize_fp8_block, quantize_fp8_block
from ascend.checkpoint.safetensors_io import DTYPES, SafetensorsDir, SafetensorsWriter
from ascend.checkpoint.w8a8 import quantize_w8a8
from ascend.convert.memory import CHUNK_BYTES
from ascend.convert import w8a8_pieces as w8
from ascend.convert.jobs import FP8_BLOCK, Piece


def chunk_rows(row_elems: int, budget: int = CHUNK_BYTES) -> int:
    """Rows per chunk: fp32 working rows within ``budget``, a multiple of 128 (at least 128)."""
    rows = budget // max(1, row_elems * 4)
    return max(FP8_BLOCK, rows // FP8_BLOCK * FP8_BLOCK)


def _narrow_cols(t: torch.Tensor, cols: tuple[int, int] | None) -> torch.Tensor:
    return t if cols is None else t[:, cols[0]:cols[1]]


def source_fp32(src: SafetensorsDir, piece: Piece, start: int, stop: int, dtype=torch.float32) -> torch.Tensor:
    """Rows [start, stop) (source coordinates) of the piece's window as ``dtype`` values.

    FP8 sources are dequantized from the enclosing 128-row blocks (so the window may start
    anywhere) and then narrowed; the result equals the whole-tensor dequantization exactly.
    """
    if piece.scale is None:
        return _narrow_cols(src.read_rows(piece.source, start, stop), piece.cols).to(dtype)
    a = start // FP8_BLOCK * FP8_BLOCK
    w = src.read_rows(piece.source, a, stop)
    s = src.read_rows(piece.scale, a // FP8_BLOCK, -(-stop // FP8_BLOCK))
    cols = piece.cols
    if cols is not None and cols[0] % FP8_BLOCK == 0:
        # a column window on a block boundary: dequantize only its blocks (same values)
        w = w[:, cols[0]:cols[1]]
        s = s[:, cols[0] // FP8_BLOCK: -(-cols[1] // FP8_BLOCK)]
        cols = None
    full = dequantize_fp8_block(w, s, dtype=dtype)
    return _narrow_cols(full[start - a:], cols)


def run_piece(src: SafetensorsDir, piece: Piece, write: Callable[[torch.Tensor], None], calib=None) -> None:
    """Write the piece's outputs, in order, through ``write``. ``calib()``: the conversion's
    calibration (static W8A8 and calibration-provided tensors only)."""
    if piece.op == w8.CALIB_OP:
        w8.run_calib(piece, write, calib())
        return
    info = src.tensors[piece.source]
    shape = info.shape
    r0, r1 = piece.rows if piece.rows is not None else (0, shape[0] if shape else 0)
    if piece.op == "copy":
        if len(shape) < 2:  # scalars / vectors: small, read whole window
            write(src.read_rows(piece.source, r0, r1) if shape else src.read(piece.source))
            return
        step = chunk_rows(shape[1] if len(shape) == 2 else int(info.row_bytes // DTYPES[info.dtype].itemsize))
        for a in range(r0, r1, step):
            write(_narrow_cols(src.read_rows(piece.source, a, min(a + step, r1)), piece.cols))
        return
    step = chunk_rows(shape[1])
    if piece.op == w8.STATIC_OP:
        w8.run_static(src, piece, write, calib(), lambda a, b: source_fp32(src, piece, a, b), step)
        return
    if piece.op == "dequant":
        for a in range(r0, r1, step):
            write(source_fp32(src, piece, a, min(a + step, r1), dtype=torch.bfloat16))
        return
    side: list[list[torch.Tensor]] = [[] for _ in piece.outputs[1:]]
    for a in range(r0, r1, step):
        x = source_fp32(src, piece, a, min(a + step, r1))
        if piece.op == "fp8":
            q, s = quantize_fp8_block(x, scale_fmt=piece.scale_fmt)
            write(q)
            side[0].append(s)
        elif piece.op == "w8a8":
            q, scale, offset = quantize_w8a8(x, overwrite=True)  # x is our own fp32 scratch
            write(q)
            side[0].append(scale)
            side[1].append(offset)
        else:
            raise ValueError(f"unknown piece op {piece.op!r}")
    for parts in side:
        write(torch.cat(parts))


_SOURCES: dict[tuple[str, str, str | None], SafetensorsDir] = {}


def open_source(src_dir: str, source_format: str = "hf", config: str | None = None) -> SafetensorsDir:
    """One lazily opened source per process (headers parsed once per worker).

    ``source_format == "mindspore"``: a ``MindSporeSource`` (same read interface, HF names);
    ``config`` is its HF config.json or directory when the checkpoint has none.
    """
    key = (src_dir, source_format, config)
    src = _SOURCES.get(key)
    if src is None:
        if source_format == "mindspore":
            from ascend.checkpoint.mindspore_layout import MindSporeSource

            src = MindSporeSource(src_dir, config)
        else:
            src = SafetensorsDir(src_dir)
        _SOURCES[key] = src
    return src


def write_file(src: SafetensorsDir, path: Path, pieces: list[Piece], metadata: dict[str, str] | None = None,
               progress: Callable[[int], None] | None = None, calib=None) -> tuple[int, str]:
    """Write one output file atomically. Returns (size, sha256). ``calib``: see ``run_piece``."""
    if pieces and pieces[0].op == "mindspore":
        size, sha = write_mindspore_pieces(src, path, pieces)
        if progress is not None:
            progress(size)
        return size, sha
    entries = [o for p in pieces for o in p.outputs]
    writer = SafetensorsWriter(path, entries, metadata)
    try:
        def write(t: torch.Tensor) -> None:
            writer.write(t)
            if progress is not None:
                progress(t.numel() * t.element_size())

        for piece in pieces:
            run_piece(src, piece, write, calib)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def read_hf_as_written(src: SafetensorsDir, name: str) -> torch.Tensor:
    """Whole HF tensor ``name`` as the MindSpore layout stores it: block-FP8 dequantized to BF16
    (MindSpore has no float8), everything else as is."""
    scale = name + "_scale_inv"
    if src.tensors[name].dtype.startswith("F8") and scale in src:
        return dequantize_fp8_block(src.read(name), src.read(scale), dtype=torch.bfloat16)
    return src.read(name)


def mindspore_rule(piece: Piece):
    """The ``MsRule`` an ``op == "mindspore"`` piece carries."""
    from ascend.models.mindspore_names import MsRule

    return MsRule(piece.outputs[0][0], tuple(piece.sources or [piece.source]), piece.transform or "rename",
                  params=dict(piece.params or {}))


def write_mindspore_pieces(src: SafetensorsDir, path: Path, pieces: list[Piece]) -> tuple[int, str]:
    """One MindSpore file (``.safetensors`` or ``.ckpt`` by ``path``'s suffix) of ``op ==
    "mindspore"`` pieces, through ``mindspore_layout.write_mindspore_file``. MindSpore writes whole
    tensors: the memory floor is the largest MindSpore tensor of the file plus one expert (see
    docs/mindspore.md), not the chunk budget of the other layouts."""
    from ascend.checkpoint.mindspore_layout import write_mindspore_file

    return write_mindspore_file(path, [mindspore_rule(p) for p in pieces], lambda n: read_hf_as_written(src, n),
                                "ckpt" if path.suffix == ".ckpt" else "safetensors")
