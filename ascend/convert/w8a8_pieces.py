"""W8A8 in the conversion: which kind each tensor gets, the static pieces, the tensors that come
from calibration, and ``quant_model_description.json`` (reference/quantization.md §1-2).

Jobs side (pure data):

- ``w8a8`` in the precision rules is refined per tensor by the scheme
  (``PrecisionPolicy.written_format``, the one decision the planner and doctor share): static
  ``W8A8`` -> piece op ``w8a8_static``; ``W8A8_DYNAMIC`` -> op ``w8a8``; ``FLOAT`` -> the tensor
  stays as it is (BF16).
- a static piece writes ``P.weight`` int8, ``P.quant_bias`` int32, ``P.input_scale`` and
  ``P.input_offset`` fp32 [1], ``P.deq_scale`` and, when the float linear has one, ``P.bias``
  fp32; the float bias is folded into ``quant_bias``, so the bias tensor has no piece of its own.
- calibration may replace tensors (smoothed norm weights) or add some (the anti-outlier norm
  bias): those are op ``calib`` pieces, read from the calibration file.

Execution side: :func:`run_static` and :func:`run_calib`, called by ``execute.run_piece``.

Calibration is read only through the interface of ``ascend.quant.store`` (``load_calibration``:
``input_range``, ``smooth_scale``, ``replaced``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ascend.checkpoint.w8a8 import (
    FLOAT_TYPE,
    QUANT_TYPE,
    STATIC_TYPE,
    activation_qparams,
    deq_scale_for,
    quantize_w8a8,
    static_params,
)
from ascend.errors import ConvertError
from ascend.models.precision import W8A8_STATIC

STATIC_OP = W8A8_STATIC
DYNAMIC_OP = "w8a8"
CALIB_OP = "calib"
W8A8_OPS = (STATIC_OP, DYNAMIC_OP)
STATE_DIR = ".ascend-convert"  # the convert state dir (ascend.convert.pipeline.STATE_DIR)


# ---------------------------------------------------------------------------------------------
# pieces


def deq_dtype(model_dtype: str) -> str:
    """safetensors dtype of ``deq_scale`` (quantization.md §1)."""
    return "F32" if deq_scale_for(torch.zeros(1), model_dtype).dtype == torch.float32 else "I64"


def static_pieces(piece_cls, src_name: str, out_name: str, wshape: tuple[int, ...], scale: str | None,
                  rows, cols, bias: str | None, deq: str) -> list:
    """The one piece of a static linear (``out_name`` ends in ``.weight``)."""
    stem, out = out_name[: -len(".weight")], wshape[0]
    outputs = [(out_name, "I8", wshape), (stem + ".quant_bias", "I32", (out,)), (stem + ".input_scale", "F32", (1,)),
               (stem + ".input_offset", "F32", (1,)), (stem + ".deq_scale", deq, (out,))]
    if bias is not None:
        outputs.append((stem + ".bias", "F32", (out,)))
    return [piece_cls(STATIC_OP, src_name, outputs, scale=scale, rows=rows, cols=cols,
                      extra={"bias": bias} if bias else None)]


def quant_description(files) -> dict[str, Any]:
    """msModelSlim ``quant_model_description.json``: a kind for every tensor written, plus the
    header keys of the v1 saver (quantization.md §2)."""
    kinds: dict[str, str] = {}
    for f in files:
        for p in f.pieces:
            kind = {STATIC_OP: STATIC_TYPE, DYNAMIC_OP: QUANT_TYPE}.get(p.op, FLOAT_TYPE)
            for name, _, _ in p.outputs:
                kinds[name] = kind
    model_type = STATIC_TYPE if STATIC_TYPE in kinds.values() else QUANT_TYPE
    return {"model_quant_type": model_type, "version": "1.0.0", "group_size": 0, "metadata": {}, "optional": {},
            **kinds}


def needs_calibration(files) -> bool:
    return any(p.op == STATIC_OP for f in files for p in f.pieces)


# ---------------------------------------------------------------------------------------------
# calibration


def calibration_dir(out_dir: str | Path) -> Path:
    from ascend.quant.store import CALIBRATION_DIR

    return Path(out_dir) / CALIBRATION_DIR


_LOADED: dict[str, Any] = {}


def load_calibration(out_dir: str | Path, *, cached: bool = False):
    """The ``Calibration`` of ``out_dir`` (ConvertError, exit 2, when missing or incomplete).
    ``cached``: one load per process (workers)."""
    key = str(Path(out_dir).resolve())
    if cached and key in _LOADED:
        return _LOADED[key]
    from ascend.quant.store import load_calibration as load

    calib = load(out_dir)
    _LOADED[key] = calib
    return calib


def calibration_fingerprint(out_dir: str | Path) -> str:
    """Digest of the calibration files (so a new calibration re-writes every weight file)."""
    d = calibration_dir(out_dir)
    h = hashlib.sha256()
    for p in sorted(d.glob("calibration.*")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def calibration_tensors(calib, specs: list) -> tuple[set[str], list[tuple[str, str, tuple[int, ...]]]]:
    """(names of source tensors calibration replaces, [(name, after, shape)] of tensors it adds):
    an added tensor is a norm bias ``N.bias`` written right after ``N.weight`` (``after``)."""
    names = {s.name for s in specs}
    replaced = {s.name for s in specs if calib.replaced(s.name) is not None}
    added = []
    for s in specs:
        if s.name.endswith("norm.weight"):
            bias = s.name[: -len(".weight")] + ".bias"
            t = None if bias in names else calib.replaced(bias)
            if t is not None:
                added.append((bias, s.name, tuple(t.shape)))
    return replaced, added


# ---------------------------------------------------------------------------------------------
# execution


def run_calib(piece, write: Callable[[torch.Tensor], None], calib) -> None:
    """A tensor calibration replaced or added, in its declared dtype and window."""
    from ascend.checkpoint.safetensors_io import DTYPES

    t = calib.replaced(piece.source)
    if t is None:
        raise ConvertError(f"calibration has no {piece.source}", fix="rerun the calibration (it was changed or deleted)")
    if piece.rows is not None:
        t = t[piece.rows[0]:piece.rows[1]]
    if piece.cols is not None:
        t = t[:, piece.cols[0]:piece.cols[1]]
    write(t.to(DTYPES[piece.outputs[0][1]]).contiguous())


def _rows_fp32(t: torch.Tensor, cols, a: int, b: int) -> torch.Tensor:
    """Rows [a, b) of ``t`` (columns ``cols``) as a fresh fp32 buffer."""
    rows = t[a:b] if cols is None else t[a:b, cols[0]:cols[1]]
    return rows.to(torch.float32).clone()


def run_static(src, piece, write: Callable[[torch.Tensor], None], calib, read_fp32, step: int) -> None:
    """Static W8A8 of one linear window, row chunk by row chunk.

    ``read_fp32(a, b)``: fp32 rows [a, b) of the (windowed) float weight. The calibration's
    replacement of the weight or its bias (``v -> o`` smoothing, anti-outlier shift) is the final
    tensor; otherwise smoothing multiplies the source weight's input columns by the calibration's
    ``smooth_scale``. The float bias is folded
    into ``quant_bias`` on the first column window only (a row-split shard's partial sums add up
    across ranks; the others carry ``-input_offset * sum(q)`` alone)."""
    module = piece.source[: -len(".weight")]
    lo, hi = calib.input_range(module)
    in_scale, in_offset = activation_qparams(lo, hi)
    bias_name = (piece.extra or {}).get("bias")
    fold_bias = bias_name is not None and (piece.cols is None or piece.cols[0] == 0)
    new_w = calib.replaced(piece.source)
    smooth = None
    if new_w is not None:
        read_fp32 = functools.partial(_rows_fp32, new_w, piece.cols)
    else:
        smooth = calib.smooth_scale(module)
        if smooth is not None and piece.cols is not None:
            smooth = smooth[piece.cols[0]:piece.cols[1]]
    new_bias = calib.replaced(bias_name) if bias_name else None
    r0, r1 = piece.rows if piece.rows is not None else (0, src.tensors[piece.source].shape[0])
    quant_bias, deq, biases = [], [], []
    for a in range(r0, r1, step):
        b = min(a + step, r1)
        w = read_fp32(a, b)
        if smooth is not None:
            w.mul_(smooth.to(torch.float32))
        q, ws, _ = quantize_w8a8(w, overwrite=True)
        bias = None
        if bias_name:
            bias = (new_bias[a:b] if new_bias is not None else src.read_rows(bias_name, a, b)).to(torch.float32)
        qb, d = static_params(q, ws, in_scale, in_offset, bias if fold_bias else None)
        write(q)
        quant_bias.append(qb)
        deq.append(d)
        if bias is not None:
            biases.append(bias)
    deq_stored = torch.cat(deq)
    if piece.outputs[4][1] == "I64":  # planned for a non-BF16 model: int64 holding the fp32 bits
        deq_stored = deq_scale_for(deq_stored, "float16")
    write(torch.cat(quant_bias))
    write(in_scale)
    write(in_offset)
    write(deq_stored)
    if bias_name:
        write(torch.cat(biases))


def calibrated_jobs(jobs, out_dir: str | Path | None, rebuild, before: Callable | None = None,
                    calibrate: Callable[[Callable[[], None]], Any] | None = None):
    """``jobs`` again with the calibration of ``out_dir`` when it has static pieces (its replaced
    and added tensors, and its fingerprint in the digest). ``rebuild((calibration, fingerprint))``
    builds the jobs. ``out_dir`` None (a dry run): ``jobs`` as is. ``calibrate(check)`` (the
    runner: reuses a current calibration, resumes a partial one) calls ``check()`` before it
    calibrates anything into the output, which runs ``before(jobs)`` (the ownership check: a
    foreign directory, or a conversion made with another calibration, is refused first). Without
    ``calibrate``, ``load_calibration`` says what is missing."""
    if out_dir is None or not needs_calibration([f for _, f in jobs.all_files()]):
        return jobs
    if calibrate is not None:
        calibrate(lambda: before(jobs) if before is not None else None)
    return rebuild((load_calibration(out_dir), calibration_fingerprint(out_dir)))


def check_piece(src, out, piece, calib, read_fp32, step: int) -> str | None:
    """``verify`` of a static or calibration piece: the written tensors equal, bit for bit, the
    formulas applied again to the source window and the calibration (None when they do)."""
    want: list[torch.Tensor] = []
    if piece.op == CALIB_OP:
        run_calib(piece, want.append, calib)
    else:
        run_static(src, piece, want.append, calib, read_fp32, step)
        q = torch.cat(want[: len(want) - len(piece.outputs) + 1])
        want = [q, *want[len(want) - len(piece.outputs) + 1:]]
    for (name, _, _), w in zip(piece.outputs, want):
        got = out.read(name)
        if got.dtype != w.dtype or got.shape != w.shape or not torch.equal(got, w):
            return f"{name} differs from the static W8A8 formulas applied to the source and calibration"
    return None
