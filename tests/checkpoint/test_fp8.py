"""Block FP8 against the formulas of reference/checkpoints.md §5, written out block by block."""

import math

import pytest
import torch

from ascend.checkpoint.fp8 import (
    FP8_DTYPE,
    dequantize_fp8_block,
    fp8_error_bound,
    quantize_fp8_block,
    scale_shape,
)

SHAPES = [(576, 300), (256, 256), (130, 129), (1, 1), (128, 7), (300, 128)]


def reference_dequant(w_fp8, scale_inv, b=128):
    """W[i, j] = float32(W_fp8[i, j]) * scale_inv[i // 128, j // 128], one block at a time."""
    out = torch.empty(w_fp8.shape, dtype=torch.float32)
    for bi in range(scale_inv.shape[0]):
        for bj in range(scale_inv.shape[1]):
            rows, cols = slice(bi * b, (bi + 1) * b), slice(bj * b, (bj + 1) * b)
            out[rows, cols] = w_fp8[rows, cols].float() * scale_inv[bi, bj].item()
    return out


def reference_quant(w, b=128, ue8m0=False):
    """Zero-pad each block, amax >= 1e-12, scale = amax/448 (or 2^ceil(log2)), clamp, cast."""
    rows, cols = math.ceil(w.shape[0] / b), math.ceil(w.shape[1] / b)
    q = torch.empty(w.shape, dtype=FP8_DTYPE)
    s = torch.empty(rows, cols, dtype=torch.float32)
    for bi in range(rows):
        for bj in range(cols):
            blk = w[bi * b:(bi + 1) * b, bj * b:(bj + 1) * b].float()
            padded = torch.zeros(b, b)
            padded[: blk.shape[0], : blk.shape[1]] = blk
            amax = max(padded.abs().max().item(), 1e-12)
            scale = torch.tensor(amax, dtype=torch.float32) / 448.0
            if ue8m0:
                scale = torch.tensor(2.0 ** math.ceil(math.log2(scale.item())), dtype=torch.float32)
            s[bi, bj] = scale
            q[bi * b:(bi + 1) * b, bj * b:(bj + 1) * b] = (blk / scale).clamp(-448, 448).to(FP8_DTYPE)
    return q, s


@pytest.mark.parametrize("shape", SHAPES)
def test_dequant_equals_definition_bit_for_bit(shape):
    g = torch.Generator().manual_seed(0)
    w_fp8 = (torch.randn(shape, generator=g) * 100).clamp(-448, 448).to(FP8_DTYPE)
    scale = torch.rand(scale_shape(shape), generator=g) * 1e-2 + 1e-5
    got = dequantize_fp8_block(w_fp8, scale)
    assert got.dtype == torch.float32
    assert torch.equal(got, reference_dequant(w_fp8, scale))
    bf16 = dequantize_fp8_block(w_fp8, scale, dtype=torch.bfloat16)
    assert torch.equal(bf16, reference_dequant(w_fp8, scale).to(torch.bfloat16))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ue8m0", [False, True])
def test_quant_equals_definition(shape, ue8m0):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=g, dtype=torch.float32).to(torch.bfloat16)
    q, s = quantize_fp8_block(w, scale_fmt="ue8m0" if ue8m0 else None)
    rq, rs = reference_quant(w, ue8m0=ue8m0)
    assert q.dtype == FP8_DTYPE and s.dtype == torch.float32
    assert tuple(s.shape) == (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
    assert torch.equal(s, rs)
    assert torch.equal(q.view(torch.uint8), rq.view(torch.uint8))
    if ue8m0:
        assert torch.equal(s, torch.exp2(torch.log2(s).round()))  # powers of two


def test_partial_edge_block_uses_own_scale():
    # kv_a_proj_with_mqa-like: 576 rows -> 5 scale rows; the last covers 64 rows only.
    w = torch.full((576, 256), 0.01)
    w[512:, :128] = 3.0  # only the partial block holds large values
    q, s = quantize_fp8_block(w)
    assert s.shape == (5, 2)
    assert s[4, 0] == torch.tensor(3.0) / 448 and s[0, 0] == torch.tensor(0.01) / 448
    back = dequantize_fp8_block(q, s)
    assert torch.allclose(back, w, rtol=2**-4)


def test_all_zero_blocks_are_safe():
    w = torch.zeros(200, 130)
    w[0, 0] = 1.0
    for fmt in (None, "ue8m0"):
        q, s = quantize_fp8_block(w, scale_fmt=fmt)
        assert torch.isfinite(s).all() and (s > 0).all()
        back = dequantize_fp8_block(q, s)
        assert torch.equal(back, w)


def test_round_trip_within_stated_bound():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(300, 260, generator=g) * torch.logspace(-6, 1, 260)  # wide dynamic range
    for fmt in (None, "ue8m0"):
        q, s = quantize_fp8_block(w, scale_fmt=fmt)
        back = dequantize_fp8_block(q, s)
        expanded = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:300, :260]
        err = (back - w).abs()
        assert (err <= fp8_error_bound(expanded, w)).all()
        # the bound is not vacuous: it is tight to within 2x somewhere
        assert (err > fp8_error_bound(expanded, w) / 2).any()


def test_row_chunks_on_block_rows_equal_whole_tensor():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(400, 300, generator=g)
    q, s = quantize_fp8_block(w)
    whole = dequantize_fp8_block(q, s)
    parts = [dequantize_fp8_block(q[r:r + 256], s[r // 128:(r + 256 + 127) // 128]) for r in (0, 256)]
    assert torch.equal(torch.cat(parts), whole)
    qs = [quantize_fp8_block(w[r:r + 256]) for r in (0, 256)]
    assert torch.equal(torch.cat([x[0] for x in qs]).view(torch.uint8), q.view(torch.uint8))
    assert torch.equal(torch.cat([x[1] for x in qs]), s)


def test_wrong_scale_shape_is_refused():
    w = torch.zeros(576, 256, dtype=FP8_DTYPE)
    with pytest.raises(ValueError, match=r"expected \[5, 2\]"):
        dequantize_fp8_block(w, torch.ones(4, 2))


def test_table_cast_equals_torch_cast_for_all_256_codes():
    from ascend.checkpoint.fp8 import fp8_to_float32

    codes = torch.arange(256, dtype=torch.uint8).view(FP8_DTYPE).reshape(16, 16)
    a, b = fp8_to_float32(codes), codes.to(torch.float32)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))  # NaN bit patterns included

