"""fused_moe: against the loop twins, transformers' GLM-5 MoE block, and as torch custom ops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import ascend.ops.moe.library  # noqa: F401  (torch.ops.ascend.*)
from ascend.ops import moe
from ascend.ops.moe import loops


def _weights(num_experts, hidden, inter, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    w13 = (torch.randn(num_experts, 2 * inter, hidden, generator=gen) / hidden**0.5).to(dtype)
    w2 = (torch.randn(num_experts, hidden, inter, generator=gen) / inter**0.5).to(dtype)
    return w13, w2


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(0, 9), n_group=st.sampled_from([1, 2]), k=st.integers(1, 4),
       scoring=st.sampled_from(["sigmoid", "softmax"]), norm=st.booleans(), with_bias=st.booleans(),
       seed=st.integers(0, 1000))
def test_fused_moe_matches_loop_reference(tokens, n_group, k, scoring, norm, with_bias, seed):
    num_experts, hidden = 8, 16
    w13, w2 = _weights(num_experts, hidden, 8, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(tokens, hidden, generator=gen)
    logits = torch.randn(tokens, num_experts, generator=gen)
    bias = torch.randn(num_experts, generator=gen) * 0.1 if with_bias else None
    args = dict(top_k=k, bias=bias, n_group=n_group, topk_group=n_group, routed_scaling_factor=1.5,
                norm_topk_prob=norm, scoring_func=scoring)
    got = moe.fused_moe(x, logits, w13, w2, **args)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, loops.fused_moe(x, logits, w13, w2, **args), rtol=1e-5, atol=1e-5)


def _glm5_block(dtype):
    from transformers import GlmMoeDsaConfig
    from transformers.models.glm_moe_dsa.modeling_glm_moe_dsa import GlmMoeDsaMoE

    cfg = GlmMoeDsaConfig(hidden_size=64, moe_intermediate_size=32, n_routed_experts=16, num_experts_per_tok=4,
                          n_group=1, topk_group=1, routed_scaling_factor=2.5, norm_topk_prob=True, n_shared_experts=1)
    cfg._experts_implementation = "eager"
    torch.manual_seed(0)
    block = GlmMoeDsaMoE(cfg)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.15)
        block.gate.e_score_correction_bias.normal_(0, 0.05)
    block.experts.to(dtype)
    block.shared_experts.to(dtype)
    return block


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("tokens", [1, 7, 40])
def test_fused_moe_matches_transformers_glm5_block(dtype, tol, tokens):
    """Copy nothing: our op reads the block's own parameters; the caller adds the shared expert."""
    block = _glm5_block(dtype)
    x = torch.randn(tokens, 64).to(dtype)
    with torch.no_grad():
        want = block(x)
        logits = torch.nn.functional.linear(x.float(), block.gate.weight.float())
        routed = moe.fused_moe(x, logits, block.experts.gate_up_proj, block.experts.down_proj, top_k=4,
                               bias=block.gate.e_score_correction_bias, routed_scaling_factor=2.5)
        got = routed + block.shared_experts(x)
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


def test_fused_moe_bf16_weights_with_fp32_logits_gives_bf16():
    w13, w2 = _weights(8, 16, 8, dtype=torch.bfloat16)
    y = moe.fused_moe(torch.randn(3, 16, dtype=torch.bfloat16), torch.randn(3, 8), w13, w2, top_k=2)
    assert y.dtype == torch.bfloat16 and y.shape == (3, 16)


def test_torch_ops_equal_the_python_api():
    w13, w2 = _weights(8, 16, 8)
    x, logits, bias = torch.randn(5, 16), torch.randn(5, 8), torch.randn(8) * 0.1
    args = dict(top_k=3, bias=bias, n_group=2, topk_group=1, routed_scaling_factor=2.0)
    assert torch.equal(torch.ops.ascend.fused_moe(x, logits, w13, w2, **args), moe.fused_moe(x, logits, w13, w2, **args))
    w, ids = torch.ops.ascend.gating_topk(logits, 3, bias=bias, n_group=2, topk_group=1)
    w_py, ids_py = moe.gating_topk(logits, 3, bias=bias, n_group=2, topk_group=1)
    assert torch.equal(w, w_py) and torch.equal(ids, ids_py)


def _op_samples():
    w13, w2 = _weights(8, 16, 8)
    x, logits, bias = torch.randn(5, 16), torch.randn(5, 8), torch.randn(8) * 0.1
    w, ids = moe.gating_topk(logits, 3, bias=bias, n_group=2, topk_group=2)
    ex, row_idx, counts = moe.init_routing(x, ids, 8)
    return {
        "gating_topk": ((logits, 3), dict(bias=bias, n_group=2, topk_group=2)),
        "init_routing": ((x, ids, 8), dict(active_expert_range=[2, 6], expert_tokens_num_type=0)),
        "grouped_matmul": ((ex, w13.transpose(1, 2), counts, 1), {}),
        "token_unpermute": ((ex, row_idx, w), {}),
        "dynamic_quant": ((x,), {}),
        "expert_mlp": ((ex, counts, w13, w2), {}),
        "fused_moe": ((x, logits, w13, w2), dict(top_k=3, bias=bias, n_group=2, topk_group=1)),
    }


@pytest.mark.parametrize("op", list(_op_samples()))
def test_custom_op_registration_passes_opcheck(op):
    """Schema, fake kernel vs real kernel shapes/dtypes, autograd registration, AOT dispatch."""
    args, kwargs = _op_samples()[op]
    torch.library.opcheck(getattr(torch.ops.ascend, op).default, args, kwargs)


def test_fake_kernels_under_fake_tensor_mode():
    with FakeTensorMode():
        x, logits = torch.empty(11, 16), torch.empty(11, 8)
        w13, w2 = torch.empty(8, 12, 16), torch.empty(8, 16, 6)
        w, ids = torch.ops.ascend.gating_topk(logits, 3)
        assert w.shape == (11, 3) and ids.dtype == torch.int32
        ex, row_idx, counts = torch.ops.ascend.init_routing(x, ids, 8, active_expert_range=[2, 6])
        assert ex.shape == (33, 16) and row_idx.dtype == torch.int32 and counts.shape == (4,)
        assert counts.dtype == torch.int64
        assert torch.ops.ascend.expert_mlp(ex, counts, w13, w2).shape == (33, 16)
        assert torch.ops.ascend.token_unpermute(ex, row_idx, w).shape == (11, 16)
        q, s = torch.ops.ascend.dynamic_quant(x.to(torch.bfloat16))
        assert q.dtype == torch.int8 and s.shape == (11,) and s.dtype == torch.float32
        assert torch.ops.ascend.fused_moe(x, logits, w13, w2, top_k=3).shape == (11, 16)
