"""W8A8_DYNAMIC weights in the msModelSlim layout (reference/ascend-ops.md §4).

Per-channel symmetric int8, data-free (no calibration): for a weight ``W [out, in]``

    weight_scale[o]  = max_j |W[o, j]| / 127          ([out, 1])
    weight           = clamp(round(W / weight_scale), -127, 127) int8   ([out, in])
    weight_offset[o] = 0                               ([out, 1])

Activations are quantized per token at run time (``npu_dynamic_quant``), so nothing else is
stored. A row is independent of every other row, so row chunks quantize exactly like the whole.
"""

from __future__ import annotations

import torch

INT8_MAX = 127.0
AMAX_FLOOR = 1e-12  # an all-zero row gets a tiny positive scale and quantizes to zeros
SCALE_DTYPE = torch.float32  # engines copy scales into the model dtype at load (see docs)

QUANT_TYPE = "W8A8_DYNAMIC"
FLOAT_TYPE = "FLOAT"
DESCRIPTION_FILE = "quant_model_description.json"
WEIGHT_FILE_STEM = "quant_model_weight_w8a8_dynamic"


def quantize_w8a8(w: torch.Tensor, *, overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w: [out, in] float (computed in fp32). ``overwrite=True``: an fp32 ``w`` is the caller's
    scratch and is used as the working buffer (one fp32 pass less; its values are destroyed).

    Returns (weight [out, in] int8, weight_scale [out, 1] float32, weight_offset [out, 1] float32).
    """
    if w.dim() != 2:
        raise ValueError(f"W8A8 weight must be 2-D, got shape {tuple(w.shape)}")
    # max |w| per row without an |w| temporary (two reductions: half the time of abs().amax()); exact
    amax = torch.maximum(w.amax(dim=1, keepdim=True), -w.amin(dim=1, keepdim=True)).to(torch.float32)
    scale = (amax.clamp_(min=AMAX_FLOOR) / INT8_MAX).to(SCALE_DTYPE)
    q = w.to(torch.float32)
    if q.data_ptr() == w.data_ptr() and not overwrite:
        q = q.clone()
    q.div_(scale).round_().clamp_(-INT8_MAX, INT8_MAX)  # in place: one fp32 buffer per chunk
    return q.to(torch.int8), scale, torch.zeros_like(scale)


def dequantize_w8a8(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """q: [out, in] int8, scale/offset: [out, 1]. Returns ``(q - offset) * scale`` [out, in] fp32."""
    w = q.to(torch.float32)
    if offset is not None:
        w -= offset.to(torch.float32)
    return w.mul_(scale.to(torch.float32))


def w8a8_error_bound(scale: torch.Tensor) -> torch.Tensor:
    """Largest |W - dequant(quant(W))| per row: half a quantization step, ``scale / 2``
    (rounding to nearest; no value is clamped because |W| <= 127·scale by construction).
    scale: [out, 1]. Returns [out, 1] fp32 with one fp32 rounding of slack."""
    return scale.to(torch.float32) * (0.5 + 2.0**-16)
