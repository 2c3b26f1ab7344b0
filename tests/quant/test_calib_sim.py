"""Static W8A8 simulation formulas (quantization.md §1) by hand, and the input probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ascend.quant.sim import (
    ActQuant,
    Probe,
    Recorder,
    act_qparams,
    fake_quant_act,
    fake_quant_weight,
)


def test_act_qparams_by_hand():
    # min -1, max 3: scale = 3/255 + 1/255 = 4/255; offset = round(1 / (4/255)) - 128 = round(63.75) - 128
    scale, offset = act_qparams(-1.0, 3.0)
    assert abs(scale - 4 / 255) < 1e-12 and offset == -64.0
    assert act_qparams(0.5, 2.0) == act_qparams(0.0, 2.0)  # min clamped to <= 0
    x = torch.tensor([-1.0, 0.0, 3.0, 10.0])
    q = torch.tensor([-128.0, -64.0, 127.0, 127.0])  # round(x / scale - 64), clamped
    assert torch.allclose(fake_quant_act(x, -1.0, 3.0), (q + 64) * (4 / 255))


def test_weight_per_channel_symmetric_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0]])
    want = torch.tensor([[127.0, -64.0, 32.0], [0.0, 0.0, 0.0]]) / 127  # -63.5 rounds to even
    assert torch.allclose(fake_quant_weight(w), want)


def test_probe_sees_matmul_and_linear_inputs():
    w, b, x = torch.randn(3, 4), torch.randn(3), torch.randn(5, 4)
    rec = Recorder()
    probe = Probe(w, "m", rec)
    assert torch.equal(x @ probe.T, x @ w.T) and type(x @ probe.T) is torch.Tensor
    assert torch.equal(rec.min["m"], x.amin(0)) and torch.equal(rec.max["m"], x.amax(0))
    y = 2 * x
    assert torch.allclose(F.linear(y, probe, b), F.linear(y, w, b))
    assert torch.equal(rec.max["m"], torch.maximum(x.amax(0), y.amax(0)))  # accumulated
    quant = Probe(w, "m", ActQuant({"m": (-1.0, 1.0)}))
    assert torch.allclose(x @ quant.T, fake_quant_act(x, -1.0, 1.0) @ w.T)
