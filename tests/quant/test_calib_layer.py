"""The calibration layer (reference attention blocks + streamed experts) and smoothing."""

from __future__ import annotations

import pytest
import torch

from ascend.models.args import load_model_args
from ascend.quant.layer import Attention, LayerWeights, mlp_forward, run_attention
from ascend.quant.sim import Recorder
from ascend.quant.smooth import smooth_layer
from ascend.reference.layers import rms_norm
from ascend.reference.model import ReferenceModel, Sequence, make_rope
from ascend.reference.parallel import Parallel
from ascend.reference.weights import CheckpointReader

IDS = [[17, 250, 3, 999, 42, 511, 8, 700, 123], [64, 901, 5, 77, 300]]


def _reader(path):
    a = load_model_args(path)
    return a, CheckpointReader(path, a, Parallel().coords)


@pytest.mark.parametrize("family,fp8", [("glm_moe_dsa", True), ("deepseek_v3", False), ("glm4_moe", False)])
def test_layer_by_layer_equals_reference_model(family, fp8, tiny_dir):
    """Attention + MLP run separately, experts streamed 3 at a time (BF16 and FP8 sources) ==
    the reference model's forward, sequence by sequence."""
    path = tiny_dir(family, fp8=fp8)
    a, reader = _reader(path)
    rope, lengths = make_rope(a), [len(s) for s in IDS]
    x = reader.read("model.embed_tokens.weight")[torch.tensor([t for ids in IDS for t in ids])]
    for layer in range(a.num_hidden_layers):
        attn = Attention(LayerWeights(reader, set(), None), a, layer, rope)
        x = mlp_forward(reader, a, layer, run_attention(attn, rope, x, lengths, batch_tokens=6), expert_chunk=3)
    got = rms_norm(x, reader.read("model.norm.weight"), a.rms_norm_eps)
    model = ReferenceModel(path, mtp=False)
    want = torch.cat([model.forward([Sequence()], [ids]) for ids in IDS])
    assert (got - want).abs().max().item() < 1e-4 * want.abs().max().item()


@pytest.mark.parametrize("family", ["glm_moe_dsa", "deepseek_v3", "glm4_moe"])
def test_smoothing_preserves_the_float_layer(family, tiny_dir):
    """norm weight ÷ s (+ norm bias for GLM-4.x), columns × s, v rows ÷ s, o columns × s: the float
    attention output is unchanged up to fp32 rounding, while the inputs really are rescaled."""
    from ascend.models.quant_schemes import static_linears

    path = tiny_dir(family)
    a, reader = _reader(path)
    rope, lengths = make_rope(a), [len(s) for s in IDS]
    x = torch.randn(sum(lengths), a.hidden_size, generator=torch.Generator().manual_seed(0))
    x[:, 3] *= 30  # an outlier channel, as in real models
    layer = 1
    static = {m for m in static_linears(family, "w8a8", a) if m.startswith(f"model.layers.{layer}.")}
    rec = Recorder()
    want = run_attention(Attention(LayerWeights(reader, static, rec), a, layer, rope), rope, x, lengths, 64)
    plain = LayerWeights(reader, set(), None)
    sm = smooth_layer(a, layer, static, rec.min, rec.max, plain.optional, alpha=0.5)
    assert set(sm.transforms) == static
    got = run_attention(Attention(LayerWeights(reader, set(), None, override=sm.tensors), a, layer, rope), rope, x, lengths, 64)
    assert (got - want).abs().max().item() < 1e-4 * want.abs().max().item()
    # and it did something: scales far from 1, the anti-outlier form has its norm bias
    for m in static:
        s = sm.transforms[m][1]
        assert s.max() / s.min() > 2
    p = f"model.layers.{layer}"
    assert (f"{p}.input_layernorm.bias" in sm.tensors) == (family == "glm4_moe")
    # the smoothed inputs seen by the static linears are the recorded ones mapped by (x - z) / s
    rec2 = Recorder()
    run_attention(Attention(LayerWeights(reader, static, rec2, override=sm.tensors), a, layer, rope), rope, x, lengths, 64)
    for m in static:
        z, s = sm.transforms[m]
        assert torch.allclose(rec2.max[m], (rec.max[m] - z) / s, rtol=1e-4, atol=1e-5)
