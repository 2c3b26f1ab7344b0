"""gating_topk / route: against the plain loop twins, hand-made tie cases and transformers' routers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ascend.ops import moe
from ascend.ops.moe import loops


@st.composite
def gating_case(draw):
    n_group = draw(st.sampled_from([1, 2, 4]))
    per_group = draw(st.integers(3, 8))
    topk_group = draw(st.integers(1, n_group))
    k = draw(st.integers(1, per_group * topk_group))
    tokens = draw(st.integers(0, 6))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    num_experts = n_group * per_group
    # A coarse grid of values makes duplicate scores (ties) frequent.
    logits = torch.randint(-3, 4, (tokens, num_experts), generator=gen).float() / 2
    bias = (torch.randint(-2, 3, (num_experts,), generator=gen).float() / 4) if draw(st.booleans()) else None
    return dict(logits=logits, k=k, bias=bias, n_group=n_group, topk_group=topk_group,
                group_select_mode=draw(st.sampled_from([0, 1])), norm_type=draw(st.sampled_from([0, 1])),
                renorm=draw(st.sampled_from([0, 1])), routed_scaling_factor=draw(st.sampled_from([1.0, 2.5])))


@settings(max_examples=60, deadline=None)
@given(gating_case())
def test_gating_topk_matches_loop_reference(case):
    logits, k = case.pop("logits"), case.pop("k")
    weights, ids = moe.gating_topk(logits, k, **case)
    ref_weights, ref_ids = loops.gating_topk(logits, k, **case)
    assert ids.dtype == torch.int32 and ids.shape == (logits.shape[0], k)
    assert torch.equal(ids, ref_ids)  # order included: descending score, ties -> lower id
    torch.testing.assert_close(weights, ref_weights, rtol=1e-6, atol=1e-7)


def test_ties_go_to_the_lower_expert_id():
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5, 1.0]])
    _, ids = moe.gating_topk(logits, 3, norm_type=1)
    assert ids.tolist() == [[1, 2, 3]]


def test_bias_steers_selection_but_not_weights():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 10.0])
    weights, ids = moe.gating_topk(logits, 2, bias=bias, norm_type=1, renorm=0)
    assert ids.tolist() == [[3, 0]]  # biased order: 3 first
    s = torch.sigmoid(logits[0, [3, 0]])
    torch.testing.assert_close(weights[0], s / s.sum())  # unbiased, renormalized (sigmoid always)


def test_group_score_is_sum_of_top2_in_mode_1_and_max_in_mode_0():
    # group 0: [0.9, 0.0, 0.0] (max .9, top-2 sum .9); group 1: [0.6, 0.6, 0.0] (max .6, sum 1.2)
    scores = torch.tensor([[0.9, 0.0, 0.0, 0.6, 0.6, 0.0]])
    logits = torch.logit(scores.clamp(1e-4, 1 - 1e-4))
    _, ids1 = moe.gating_topk(logits, 1, n_group=2, topk_group=1, group_select_mode=1)
    _, ids0 = moe.gating_topk(logits, 1, n_group=2, topk_group=1, group_select_mode=0)
    assert ids1.tolist() == [[3]] and ids0.tolist() == [[0]]


def test_softmax_is_not_renormalized_unless_asked():
    logits = torch.randn(4, 8)
    w, ids = moe.gating_topk(logits, 2, norm_type=0, renorm=0)
    torch.testing.assert_close(w, torch.softmax(logits, -1).gather(1, ids.long()))
    w1, _ = moe.gating_topk(logits, 2, norm_type=0, renorm=1, routed_scaling_factor=2.0)
    torch.testing.assert_close(w1.sum(-1), torch.full((4,), 2.0))


def test_output_dtype_follows_logits():
    w, ids = moe.gating_topk(torch.randn(3, 8, dtype=torch.bfloat16), 2)
    assert w.dtype == torch.bfloat16 and ids.dtype == torch.int32


def test_invalid_group_arguments_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        moe.gating_topk(torch.randn(2, 10), 2, n_group=3)
    with pytest.raises(ValueError, match="k"):
        moe.gating_topk(torch.randn(2, 8), 5, n_group=4, topk_group=1)


def test_route_raw_sigmoid_without_norm_topk_prob():
    logits = torch.randn(5, 16)
    w, ids = moe.route(logits, 4, norm_topk_prob=False, routed_scaling_factor=2.0)
    torch.testing.assert_close(w, torch.sigmoid(logits).gather(1, ids.long()) * 2.0)


def _hf_router(kind: str, num_experts: int, k: int, n_group: int, topk_group: int):
    torch.manual_seed(0)
    common = dict(hidden_size=32, moe_intermediate_size=16, n_routed_experts=num_experts, num_experts_per_tok=k,
                  n_group=n_group, topk_group=topk_group, routed_scaling_factor=2.5, norm_topk_prob=True)
    if kind == "deepseek_v3":
        from transformers import DeepseekV3Config
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter as Router
        cfg = DeepseekV3Config(**common)
    elif kind == "glm4_moe":
        from transformers import Glm4MoeConfig
        from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeTopkRouter as Router
        cfg = Glm4MoeConfig(**common)
    else:
        from transformers import GlmMoeDsaConfig
        from transformers.models.glm_moe_dsa.modeling_glm_moe_dsa import GlmMoeDsaTopkRouter as Router
        cfg = GlmMoeDsaConfig(**common)
    router = Router(cfg)
    with torch.no_grad():
        router.weight.normal_(0, 0.5)
        router.e_score_correction_bias.normal_(0, 0.1)
    return router


@pytest.mark.parametrize("kind,num_experts,k,n_group,topk_group", [
    ("deepseek_v3", 32, 8, 8, 4),  # DeepSeek-V3 shape in miniature: 8 groups, keep 4
    ("deepseek_v3", 16, 4, 1, 1),
    ("glm4_moe", 32, 8, 4, 2),
    ("glm4_moe", 16, 4, 1, 1),  # GLM-4.5: one group
    ("glm_moe_dsa", 32, 8, 1, 1),  # GLM-5
])
def test_route_matches_transformers_routers(kind, num_experts, k, n_group, topk_group):
    router = _hf_router(kind, num_experts, k, n_group, topk_group)
    x = torch.randn(64, 32)
    with torch.no_grad():
        logits, hf_weights, hf_ids = router(x)
    weights, ids = moe.route(logits, k, bias=router.e_score_correction_bias, n_group=n_group,
                             topk_group=topk_group, routed_scaling_factor=2.5)
    # transformers' top-k order is unspecified (sorted=False): compare sets, then weights per expert.
    hf_sorted, hf_order = hf_ids.sort(dim=-1)
    ours_sorted, ours_order = ids.long().sort(dim=-1)
    assert torch.equal(hf_sorted, ours_sorted)
    torch.testing.assert_close(weights.gather(1, ours_order), hf_weights.gather(1, hf_order), rtol=0, atol=1e-6)
