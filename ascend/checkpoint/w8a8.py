"""W8A8 weights in the msModelSlim layout (reference/quantization.md §1, ascend-ops.md §4).

Two linear kinds: ``W8A8_DYNAMIC`` (below, data-free) and static ``W8A8`` (after it: activations
quantized per tensor with a scale and offset taken from calibration min/max).

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
STATIC_TYPE = "W8A8"
FLOAT_TYPE = "FLOAT"
DESCRIPTION_FILE = "quant_model_description.json"
WEIGHT_FILE_STEM = "quant_model_weights"  # msModelSlim v1 saver: quant_model_weights-0000N-of-0000M
V0_WEIGHT_FILE_STEM = "quant_model_weight_w8a8_dynamic"  # older saver; still read


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


# ---------------------------------------------------------------------------------------------
# Static W8A8 (quantization.md §1). For a float linear ``y = x @ W.T + b`` and calibration
# min/max of its input (min clamped <= 0, max >= 0):
#
#     input_scale  = max(max/255 - min/255, eps)                        fp32 [1]
#     input_offset = round(-min / input_scale) - 128  (an integer)       fp32 [1]
#     x_q          = clamp(round(x / input_scale + input_offset), -128, 127)
#     weight, weight_scale as W8A8_DYNAMIC above (per output channel, symmetric)
#     deq_scale    = input_scale * weight_scale                          [out]
#     quant_bias   = round(b / deq_scale - input_offset * sum_k weight[:, k])  int32 [out]
#
# so that ``deq_scale * (x_q @ weight.T + quant_bias) ~= x @ W.T + b``.

UINT8_LEVELS = 255.0
FP32_EPS = torch.finfo(torch.float32).eps


def activation_qparams(amin: float, amax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_scale, input_offset), fp32 [1] each, from the calibration range of a linear's input."""
    lo = torch.tensor([min(float(amin), 0.0)], dtype=torch.float32)
    hi = torch.tensor([max(float(amax), 0.0)], dtype=torch.float32)
    scale = (hi / UINT8_LEVELS - lo / UINT8_LEVELS).clamp_(min=FP32_EPS)
    offset = torch.round(-lo / scale) - 128.0
    return scale, offset


def quantize_activation(x: torch.Tensor, input_scale: torch.Tensor, input_offset: torch.Tensor) -> torch.Tensor:
    """Per-tensor asymmetric int8 codes of ``x`` (returned as float32 integers in [-128, 127])."""
    return torch.round(x.to(torch.float32) / input_scale + input_offset).clamp_(-128.0, 127.0)


def static_params(q: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor,
                  input_offset: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(quant_bias int32 [out], deq_scale fp32 [out]) of a static linear.

    q: [out, in] int8; weight_scale: [out, 1]; bias: [out] float or None (= 0). Row chunks give
    the same values as the whole (every quantity is per output channel)."""
    deq = (input_scale.to(torch.float32) * weight_scale.to(torch.float32).reshape(-1))
    row_sum = q.to(torch.int64).sum(dim=1).to(torch.float64)  # exact integers
    b = torch.zeros_like(row_sum) if bias is None else bias.to(torch.float64).reshape(-1)
    quant_bias = torch.round(b / deq.to(torch.float64) - input_offset.to(torch.float64) * row_sum)
    return quant_bias.to(torch.int32), deq


def deq_scale_for(deq: torch.Tensor, model_dtype: str) -> torch.Tensor:
    """``deq_scale`` as stored: fp32 for a bf16 model, else int64 holding the fp32 bit pattern."""
    deq = deq.to(torch.float32).contiguous()
    if model_dtype in ("bfloat16", "bf16"):
        return deq
    return deq.view(torch.int32).to(torch.int64)


def deq_scale_values(stored: torch.Tensor) -> torch.Tensor:
    """fp32 values of a stored ``deq_scale`` (either form of :func:`deq_scale_for`)."""
    if stored.dtype == torch.int64:
        return stored.to(torch.int32).view(torch.float32)
    return stored.to(torch.float32)


def static_matmul(x: torch.Tensor, q: torch.Tensor, deq: torch.Tensor, input_scale: torch.Tensor,
                  input_offset: torch.Tensor, quant_bias: torch.Tensor) -> torch.Tensor:
    """``deq_scale * (x_q @ q.T + quant_bias)`` (the definition), integer part exact in float64.
    x: [..., in]; returns [..., out] float32."""
    xq = quantize_activation(x, input_scale, input_offset).to(torch.float64)
    acc = xq @ q.to(torch.float64).T + quant_bias.to(torch.float64)
    return (acc * deq.to(torch.float64)).to(torch.float32)


def static_error_bound(x: torch.Tensor, w: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor,
                       deq: torch.Tensor) -> torch.Tensor:
    """Bound on |static_matmul - (x @ w.T + b)| per output, for inputs inside the calibration
    range: weight rounding (|x| . scale/2), activation rounding (input_scale/2 . |w_q|), their
    product, and the bias rounding (deq/2). x: [N, in]; w: [out, in] float. Returns [N, out]."""
    x, w = x.to(torch.float64).abs(), w.to(torch.float64).abs()
    dw = weight_scale.to(torch.float64).reshape(1, -1) / 2
    dx = float(input_scale) / 2
    n = w.shape[1]
    return (x.sum(-1, keepdim=True) * dw + dx * (w.sum(-1) + n * dw) + deq.to(torch.float64).reshape(1, -1)) * (1 + 1e-6)
