"""Per-channel symmetric int8 (msModelSlim W8A8_DYNAMIC) against its formula."""

import torch

from ascend.checkpoint.w8a8 import dequantize_w8a8, quantize_w8a8, w8a8_error_bound


def test_quant_matches_formula_row_by_row():
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(37, 53, generator=g) * torch.logspace(-3, 1, 37)[:, None]).to(torch.bfloat16)
    q, scale, offset = quantize_w8a8(w)
    assert q.dtype == torch.int8 and q.shape == (37, 53)
    assert scale.shape == (37, 1) and offset.shape == (37, 1) and not offset.any()
    for o in range(37):
        row = w[o].float()
        s = row.abs().max() / 127
        assert scale[o, 0] == s
        expect = [max(-127, min(127, round(v))) for v in (row / s).tolist()]
        assert q[o].tolist() == expect
    assert q.abs().max() == 127 and q.min() >= -127  # every row reaches full scale, -128 unused


def test_round_trip_within_half_step_and_zero_rows_safe():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 300, generator=g)
    w[5] = 0
    q, scale, offset = quantize_w8a8(w)
    back = dequantize_w8a8(q, scale, offset)
    assert torch.isfinite(back).all() and not back[5].any()
    err = (back - w).abs()
    assert (err <= w8a8_error_bound(scale)).all()
    assert (err > w8a8_error_bound(scale) * 0.9).any()  # the bound is tight


def test_row_chunks_equal_whole():
    w = torch.randn(100, 40, generator=torch.Generator().manual_seed(2))
    whole = quantize_w8a8(w)
    parts = [quantize_w8a8(w[:33]), quantize_w8a8(w[33:])]
    for i in range(3):
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])
