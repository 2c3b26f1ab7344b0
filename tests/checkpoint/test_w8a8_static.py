"""Static W8A8 (quantization.md §1): a hand-computed oracle for one linear, the identity
``deq_scale * (x_q . q_w + quant_bias) ~= x . w + bias`` within its bound, deq_scale storage."""

import struct

import pytest
import torch

from ascend.checkpoint.w8a8 import (
    activation_qparams,
    deq_scale_for,
    deq_scale_values,
    quantize_activation,
    quantize_w8a8,
    static_error_bound,
    static_matmul,
    static_params,
)


def test_hand_computed_linear():
    # w rows: amax 1.27 -> weight_scale 0.01, amax 0.254 -> 0.002; calibration range [-1, 3]
    w = torch.tensor([[1.27, -0.5], [-0.254, 0.1]])
    bias = torch.tensor([0.11, -0.2])
    q, ws, _ = quantize_w8a8(w)
    assert q.tolist() == [[127, -50], [-127, 50]]
    scale, offset = activation_qparams(-1.0, 3.0)
    # input_scale = 3/255 - (-1)/255 = 4/255; input_offset = round(1 / (4/255)) - 128 = round(63.75) - 128
    assert scale.dtype == torch.float32 and scale.shape == (1,)
    assert scale.item() == pytest.approx(4 / 255, rel=1e-7)
    assert offset.tolist() == [-64.0]
    qb, deq = static_params(q, ws, scale, offset, bias)
    # deq = 4/255 * [0.01, 0.002]
    assert deq.tolist() == pytest.approx([4 / 255 * 0.01, 4 / 255 * 0.002], rel=1e-6)
    # quant_bias[0] = round(0.11 / (4/25500) + 64 * (127 - 50)) = round(701.25 + 4928) = 5629
    # quant_bias[1] = round(-0.2 / (8/255000) + 64 * (-127 + 50)) = -6375 - 4928 = -11303
    assert qb.dtype == torch.int32 and qb.tolist() == [5629, -11303]
    # one activation by hand: x = [0.5, -0.25] -> round(x / (4/255) - 64) = [round(-32.125), round(-79.9375)]
    x = torch.tensor([[0.5, -0.25]])
    assert quantize_activation(x, scale, offset).tolist() == [[-32.0, -80.0]]
    # deq * (x_q . q + qb): row 0 = (-32*127 + -80*-50 + 5629) = 5565 -> 5565 * 4/25500
    y = static_matmul(x, q, deq, scale, offset, qb)
    assert y[0, 0].item() == pytest.approx(5565 * 4 / 25500, rel=1e-6)
    assert y[0].tolist() == pytest.approx((x @ w.T + bias)[0].tolist(), abs=0.01)


def test_range_is_clamped_to_contain_zero():
    s1, o1 = activation_qparams(0.5, 2.0)  # min above 0 -> 0
    s2, o2 = activation_qparams(0.0, 2.0)
    assert torch.equal(s1, s2) and torch.equal(o1, o2) and o1.item() == -128
    s3, o3 = activation_qparams(-3.0, -1.0)  # max below 0 -> 0
    assert s3.item() == pytest.approx(3 / 255) and o3.item() == 127
    s4, _ = activation_qparams(0.0, 0.0)
    assert s4.item() == torch.finfo(torch.float32).eps


def test_identity_holds_within_bound_on_random_linear():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(48, 96, generator=g) * 0.05
    bias = torch.randn(48, generator=g) * 0.1
    x = torch.randn(64, 96, generator=g) * 2
    scale, offset = activation_qparams(x.min().item(), x.max().item())
    q, ws, _ = quantize_w8a8(w)
    qb, deq = static_params(q, ws, scale, offset, bias)
    y = static_matmul(x, q, deq, scale, offset, qb)
    err = (y - (x @ w.T + bias)).abs()
    bound = static_error_bound(x, w, ws, scale, deq)
    assert (err <= bound).all()
    assert err.max() > 0.05 * bound.max()  # the bound is not vacuous
    # exactness: the integer part is the definition (float64 accumulation of integer products)
    xq = quantize_activation(x, scale, offset).long()
    acc = xq @ q.long().T + qb.long()
    assert torch.equal(y, (acc.double() * deq.double()).float())


def test_row_chunks_equal_whole():
    g = torch.Generator().manual_seed(4)
    w, bias = torch.randn(20, 30, generator=g), torch.randn(20, generator=g)
    scale, offset = activation_qparams(-2.0, 5.0)
    q, ws, _ = quantize_w8a8(w)
    whole = static_params(q, ws, scale, offset, bias)
    parts = [static_params(q[a:b], ws[a:b], scale, offset, bias[a:b]) for a, b in ((0, 7), (7, 20))]
    for i in range(2):
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])


def test_deq_scale_dtype_by_model_dtype():
    deq = torch.tensor([1.5e-4, 3.0e-5], dtype=torch.float32)
    assert deq_scale_for(deq, "bfloat16").dtype == torch.float32
    stored = deq_scale_for(deq, "float16")
    assert stored.dtype == torch.int64
    # the int64 holds the fp32 bit pattern (independent oracle: struct)
    assert stored.tolist() == [struct.unpack("<i", struct.pack("<f", v))[0] for v in deq.tolist()]
    assert torch.equal(deq_scale_values(stored), deq)
    assert torch.equal(deq_scale_values(deq_scale_for(deq, "bfloat16")), deq)
