"""Block-wise FP8 (e4m3) weights as DeepSeek-V3 / GLM-5 checkpoints store them.

Format (reference/checkpoints.md §4–5): a weight ``W [out, in]`` is stored as
``float8_e4m3fn`` plus ``weight_scale_inv [ceil(out/128), ceil(in/128)] float32``, one scale per
128×128 block, row-major over blocks. A block at the right or bottom edge may be partial; it has
its own scale, computed as if the block were zero-padded to 128×128.

    dequant: W[i, j] = float32(W_fp8[i, j]) * scale_inv[i // 128, j // 128]   (fp32, then cast)
    quant:   amax = max(|block|, 1e-12); scale_inv = amax / 448
             (ue8m0: scale_inv = 2 ** ceil(log2(amax / 448)), still stored as float32)
             W_fp8 = clamp(W / scale_inv, -448, 448) cast to float8_e4m3fn

Both functions also work on a row chunk of a larger tensor, as long as the chunk starts on a
block row (a multiple of ``block[0]``) and is given the matching rows of ``scale_inv``.
"""

from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
AMAX_FLOOR = 1e-12  # an all-zero block would otherwise give scale 0 and 0/0 = NaN
BLOCK = (128, 128)


def scale_shape(shape: tuple[int, int] | torch.Size, block: tuple[int, int] = BLOCK) -> tuple[int, int]:
    """Shape of ``weight_scale_inv`` for a weight of ``shape``: ``[ceil(out/b0), ceil(in/b1)]``."""
    out_dim, in_dim = shape
    return (-(-out_dim // block[0]), -(-in_dim // block[1]))


def _expand_blocks(scale: torch.Tensor, shape: tuple[int, int], block: tuple[int, int]) -> torch.Tensor:
    """Per-block values ``[ceil(out/b0), ceil(in/b1)]`` -> per-element ``[out, in]`` (cropped)."""
    out_dim, in_dim = shape
    full = scale.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)
    return full[:out_dim, :in_dim]


_FP8_TO_F32 = torch.arange(256, dtype=torch.uint8).view(FP8_DTYPE).to(torch.float32).numpy()


def fp8_to_float32(w: torch.Tensor) -> torch.Tensor:
    """float8_e4m3fn -> float32, bit-identical to ``w.to(torch.float32)``.

    A 256-entry table lookup: about twice as fast as torch's elementwise cast on CPU.
    """
    codes = w.contiguous().view(torch.uint8).numpy()
    return torch.from_numpy(_FP8_TO_F32[codes])  # fancy indexing: fastest numpy gather here


def dequantize_fp8_block(
    w: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int] = BLOCK,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dequantize a block-FP8 weight.

    w: [out, in] float8_e4m3fn; scale_inv: [ceil(out/b0), ceil(in/b1)] float32.
    Returns [out, in] ``dtype``: ``float32(w) * scale_inv[block]`` computed in fp32, then cast
    (one rounding, as DeepSeek's ``weight_dequant`` does).
    """
    if w.dim() != 2:
        raise ValueError(f"block FP8 weight must be 2-D, got shape {tuple(w.shape)}")
    expected = scale_shape(w.shape, block)
    if tuple(scale_inv.shape) != expected:
        raise ValueError(
            f"weight_scale_inv has shape {tuple(scale_inv.shape)}, expected {list(expected)} "
            f"for a weight of shape {list(w.shape)} with {block[0]}x{block[1]} blocks"
        )
    out_dim, in_dim = w.shape
    out = fp8_to_float32(w)
    scale_inv = scale_inv.to(torch.float32)
    if out_dim % block[0] == 0 and in_dim % block[1] == 0:
        # whole blocks: broadcast one scale over each block view (same products, no expanded copy)
        blocks = out.view(out_dim // block[0], block[0], in_dim // block[1], block[1])
        blocks.mul_(scale_inv[:, None, :, None])
    else:
        out.mul_(_expand_blocks(scale_inv, (out_dim, in_dim), block))
    return out if dtype == torch.float32 else out.to(dtype)


def _ue8m0(x: torch.Tensor) -> torch.Tensor:
    """Round positive fp32 values up to a power of two: ``2 ** ceil(log2(x))``, exactly.

    ``frexp`` gives ``x = m * 2**e`` with ``m`` in [0.5, 1): ``x`` is a power of two iff ``m == 0.5``
    (then ``ceil(log2 x) = e - 1``), otherwise ``ceil(log2 x) = e``. This avoids ``log2`` rounding
    a value just above a power of two down onto it.
    """
    mantissa, exponent = torch.frexp(x)
    exponent = exponent - (mantissa == 0.5).to(exponent.dtype)
    return torch.ldexp(torch.ones_like(x), exponent)


def block_amax(w: torch.Tensor, block: tuple[int, int] = BLOCK) -> torch.Tensor:
    """max |w| per block, zero padding included: w [out, in] -> [ceil(out/b0), ceil(in/b1)] fp32."""
    out_dim, in_dim = w.shape
    rows, cols = scale_shape(w.shape, block)
    pad_r, pad_c = rows * block[0] - out_dim, cols * block[1] - in_dim
    a = w.to(torch.float32).abs()
    if pad_r or pad_c:
        a = torch.nn.functional.pad(a, (0, pad_c, 0, pad_r))
    return a.view(rows, block[0], cols, block[1]).amax(dim=3).amax(dim=1)


def quantize_fp8_block(
    w: torch.Tensor,
    block: tuple[int, int] = BLOCK,
    scale_fmt: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a weight to block FP8.

    w: [out, in] any float dtype (computed in fp32).
    scale_fmt: None (``scale_inv = amax / 448``) or ``"ue8m0"`` (power-of-two scales).
    Returns (w_fp8 [out, in] float8_e4m3fn, scale_inv [ceil(out/b0), ceil(in/b1)] float32).
    """
    if w.dim() != 2:
        raise ValueError(f"block FP8 weight must be 2-D, got shape {tuple(w.shape)}")
    if scale_fmt not in (None, "ue8m0"):
        raise ValueError(f"unknown scale_fmt {scale_fmt!r}; expected None or 'ue8m0'")
    amax = block_amax(w, block).clamp_(min=AMAX_FLOOR)
    scale_inv = amax / FP8_MAX
    if scale_fmt == "ue8m0":
        scale_inv = _ue8m0(scale_inv)
    q = w.to(torch.float32) / _expand_blocks(scale_inv, tuple(w.shape), block)
    return q.clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale_inv


def fp8_error_bound(scale_inv_expanded: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Largest |W - dequant(quant(W))| the format allows per element, for verification.

    e4m3 has 3 mantissa bits: rounding to nearest loses at most half a step, i.e. ``|x|·2^-4``
    for normal values and ``2^-10`` (half the subnormal step 2^-9) below; in weight units multiply
    by the block scale. Clamping at ±448 adds nothing: ``|W| / scale_inv <= 448`` by construction
    up to one fp32 rounding, covered by the relative slack.
    reference, scale_inv_expanded: [out, in] fp32. Returns [out, in] fp32.
    """
    half_step = torch.maximum(reference.abs() / scale_inv_expanded * 2.0**-4, torch.tensor(2.0**-10))
    return half_step * scale_inv_expanded * (1 + 2.0**-20) + 1e-30
