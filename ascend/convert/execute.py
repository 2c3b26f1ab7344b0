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
from ascend.checkpoint.safetensors_io import DTYPES, SafetensorsDir
from ascend.checkpoint.safetensors_writer import SafetensorsWriter
from ascend.checkpoint.w8a8 import quantize_w8a8
from ascend.convert import w8a8_pieces as w8
from ascend.convert.adapters import layout_of_piece
from ascend.convert.adapters import source_format as source_format_adapter
from ascend.convert.jobs import FP8_BLOCK, Piece
from ascend.convert.memory import CHUNK_BYTES
from ascend.errors import CheckpointError


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


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in ``t`` (integer tensors: trivially). One vectorised min/max pass without
    temporaries (NaN propagates through both, Inf is an extreme), cheap enough to run on every
    chunk convert writes; ``isfinite().all()`` costs ~40x more."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if t.dtype == torch.float8_e4m3fn:  # no Inf in e4m3fn; NaN is code 0x7F (int8 max) or 0xFF (uint8 max)
        return int(t.view(torch.int8).max()) != 127 and int(t.view(torch.uint8).max()) != 255
    if t.element_size() == 1:  # other 8-bit floats: no vectorised min/max
        t = t.float()
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def _tensor_finite(src: SafetensorsDir, name: str) -> bool:
    """Every stored value of source tensor ``name`` is finite (read in row chunks)."""
    info = src.tensors[name]
    if len(info.shape) < 2:
        return all_finite(src.read(name))
    step = chunk_rows(int(info.row_bytes // DTYPES[info.dtype].itemsize))
    return all(all_finite(src.read_rows(name, a, min(a + step, info.shape[0]))) for a in range(0, info.shape[0], step))


def nonfinite_error(src: SafetensorsDir, piece: Piece) -> CheckpointError:
    """Why the output of ``piece`` holds NaN or Inf: which source tensor has them, else overflow."""
    out = piece.outputs[0][0]
    for name in [piece.source, *([piece.scale] if piece.scale else [])]:
        if not _tensor_finite(src, name):
            return CheckpointError(f"source tensor {name} holds NaN or Inf values", why=f"{out} would not be finite",
                                   fix="the checkpoint is damaged: re-download it, or repair that tensor")
    return CheckpointError(f"converting {piece.source} gives NaN or Inf in {out}",
                           why="a finite source value overflows the output format (is its weight_scale_inv absurdly large?)",
                           fix="check the source tensor and its scale")


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

    Another ``source_format`` opens through its adapter (``ascend.convert.adapters``; same read
    interface, HF names); ``config`` is its HF config.json or directory when it has none.
    """
    key = (src_dir, source_format, config)
    src = _SOURCES.get(key)
    if src is None:
        fmt = source_format_adapter(source_format)
        src = fmt.open(src_dir, config) if fmt is not None else SafetensorsDir(src_dir)
        _SOURCES[key] = src
    return src


def write_file(src: SafetensorsDir, path: Path, pieces: list[Piece], metadata: dict[str, str] | None = None,
               progress: Callable[[int], None] | None = None, calib=None) -> tuple[int, str]:
    """Write one output file atomically. Returns (size, sha256). ``calib``: see ``run_piece``."""
    layout = layout_of_piece(pieces[0]) if pieces else None
    if layout is not None:  # another framework's layout writes its files itself
        size, sha = layout.write_file(src, path, pieces)
        if progress is not None:
            progress(size)
        return size, sha
    entries = [o for p in pieces for o in p.outputs]
    writer = SafetensorsWriter(path, entries, metadata)
    try:
        def write(t: torch.Tensor) -> None:  # called for the pieces in turn (``piece``: the loop's current one)
            if not all_finite(t):  # nothing non-finite is written, whatever its cause
                raise nonfinite_error(src, piece)
            writer.write(t)
            if progress is not None:
                progress(t.numel() * t.element_size())

        for piece in pieces:
            run_piece(src, piece, write, calib)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
