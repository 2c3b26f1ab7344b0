"""shard_slice: the slices of all ranks tile every tensor exactly; FP8 scales follow in block units."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ascend.errors import PlanError
from ascend.models import (
    ModelArgs,
    ShardAlignmentError,
    ShardCoords,
    fp8_alignment_problem,
    local_shape,
    published_model_args,
    shard_slice,
    tensor_specs,
)

# Small configs whose split dims allow TP up to 8: 8 heads, 16 experts, GQA with 2 KV heads.
_BASE = dict(vocab_size=203, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
             num_attention_heads=8, n_routed_experts=16, num_experts_per_tok=2, first_k_dense_replace=1,
             num_nextn_predict_layers=1)
_MLA = dict(q_lora_rank=16, kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8)
CONFIGS = {
    "glm_moe_dsa": dict(_BASE, **_MLA, model_type="glm_moe_dsa", num_key_value_heads=8, index_n_heads=2,
                        index_head_dim=8, index_topk=4),
    "deepseek_v3": dict(_BASE, **_MLA, model_type="deepseek_v3", num_key_value_heads=8, n_group=2, topk_group=1),
    "glm4_moe": dict(_BASE, model_type="glm4_moe", num_key_value_heads=2, head_dim=4, attention_bias=True,
                     use_qk_norm=True),
}


def _coverage(spec, world, dp, ep):
    """How many ranks hold each element of ``spec`` (and, per rank, the slices)."""
    count = np.zeros(spec.shape, dtype=np.int64)
    slices = {}
    for rank in range(world):
        coords = ShardCoords.for_rank(rank, world, dp=dp, ep=ep)
        sl = shard_slice(spec, coords)
        slices[rank] = sl
        if sl is not None:
            assert all(s.step in (None, 1) and 0 <= s.start <= s.stop <= n for s, n in zip(sl, spec.shape))
            count[sl] += 1
            assert local_shape(spec, coords) == tuple(s.stop - s.start for s in sl)
    return count, slices


@settings(max_examples=25, deadline=None)
@given(family=st.sampled_from(sorted(CONFIGS)), world_exp=st.integers(0, 3), dp_exp=st.integers(0, 3),
       ep_exp=st.integers(0, 3))
def test_slices_tile_every_tensor(family, world_exp, dp_exp, ep_exp):
    world = 2**world_exp
    dp, ep = 2 ** min(dp_exp, world_exp), 2 ** min(ep_exp, world_exp)
    args = ModelArgs.from_config(CONFIGS[family])
    tp = world // dp
    for spec in tensor_specs(args):
        count, slices = _coverage(spec, world, dp, ep)
        kind = spec.split
        if kind == "replicated":
            expected = world
        elif kind == "expert":
            expected = 1  # exactly one EP rank owns it, its MoE-TP group tiles it
        elif spec.replicate_units and tp > spec.units:
            expected = dp * (tp // spec.units)  # KV heads shared by tp/kv ranks in each DP group
        else:  # column / row / vocab over the attention-TP group: one full copy per DP group
            assert spec.group == "attn", spec.name
            expected = dp
        assert (count == expected).all(), (spec.name, kind, world, dp, ep, np.unique(count))


def test_expert_ownership_is_contiguous():
    args = ModelArgs.from_config(CONFIGS["deepseek_v3"])
    specs = [s for s in tensor_specs(args, mtp=False) if s.split == "expert" and s.name.endswith("gate_proj.weight")]
    world, ep = 8, 4  # 16 experts over 4 EP ranks (4 each), MoE TP 2
    for spec in specs:
        owners = {r for r in range(world) if shard_slice(spec, ShardCoords.for_rank(r, world, ep=ep)) is not None}
        first = spec.expert // 4 * 2  # EP rank e // 4 = ranks 2e'..2e'+1
        assert owners == {first, first + 1}


def test_gqa_kv_head_follows_query_heads():
    """TP 4 with 2 KV heads: each rank holds the KV head its query heads use (checkpoints.md §6.1)."""
    args = ModelArgs.from_config(CONFIGS["glm4_moe"])
    spec = {s.name: s for s in tensor_specs(args)}
    q, k = spec["model.layers.0.self_attn.q_proj.weight"], spec["model.layers.0.self_attn.k_proj.weight"]
    d = args.head_dim
    for rank in range(4):
        c = ShardCoords.for_rank(rank, 4)
        q_heads = range(shard_slice(q, c)[0].start // d, shard_slice(q, c)[0].stop // d)
        k_heads = range(shard_slice(k, c)[0].start // d, shard_slice(k, c)[0].stop // d)
        group = args.num_attention_heads // args.num_key_value_heads
        assert list(k_heads) == sorted({h // group for h in q_heads})


def test_vocab_split_uneven():
    args = ModelArgs.from_config(CONFIGS["glm_moe_dsa"])  # vocab 203 over TP 4: 51, 51, 51, 50
    embed = tensor_specs(args)[0]
    rows = [local_shape(embed, ShardCoords.for_rank(r, 4))[0] for r in range(4)]
    assert rows == [51, 51, 51, 50]


def test_scale_slices_follow_the_weight_in_blocks():
    a = published_model_args("ZhipuAI/GLM-5-FP8")
    spec = {s.name: s for s in tensor_specs(a, mtp=False) if s.layer in (None, 0, 3)}
    kvb = spec["model.layers.0.self_attn.kv_b_proj.weight"]
    kvb_s = spec["model.layers.0.self_attn.kv_b_proj.weight_scale_inv"]
    c = ShardCoords.for_rank(3, 16)  # TP 16: 4 heads × 448 rows = 1792 rows = 14 blocks per rank
    w = shard_slice(kvb, c)[0]
    s = shard_slice(kvb_s, c)[0]
    assert (w.start, w.stop) == (3 * 1792, 4 * 1792) and (s.start, s.stop) == (3 * 14, 4 * 14)
    # kv_a (576 rows, partial last block) is replicated: its 5 scale rows go everywhere
    assert local_shape(spec["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"], c) == (5, 48)
    # TP 64: 448 rows per rank = 3.5 blocks -> refused with the numbers (checkpoints.md §6.3)
    with pytest.raises(ShardAlignmentError, match="28672 rows"):
        shard_slice(kvb_s, ShardCoords.for_rank(1, 64))
    # expert scales: absent on non-owners, split in blocks on the owner
    e = spec["model.layers.3.mlp.experts.17.down_proj.weight_scale_inv"]
    assert shard_slice(e, ShardCoords.for_rank(0, 16, ep=16)) is None  # EP rank 0 owns experts 0-15
    assert local_shape(e, ShardCoords.for_rank(1, 16, ep=16)) == (48, 16)
    assert local_shape(e, ShardCoords.for_rank(1, 16, ep=8)) == (48, 8)  # EP 8 x MoE TP 2: 1024 cols


# checkpoints.md §6.3: which TP sizes keep 128-block alignment
@pytest.mark.parametrize(
    "model_id, name, tp, ok",
    [
        ("ZhipuAI/GLM-5-FP8", "model.layers.0.self_attn.q_b_proj.weight", 64, True),
        ("ZhipuAI/GLM-5-FP8", "model.layers.0.self_attn.kv_b_proj.weight", 32, True),
        ("ZhipuAI/GLM-5-FP8", "model.layers.0.self_attn.kv_b_proj.weight", 64, False),
        ("ZhipuAI/GLM-5-FP8", "model.layers.0.mlp.down_proj.weight", 32, True),
        ("ZhipuAI/GLM-5-FP8", "model.layers.0.mlp.down_proj.weight", 64, False),
        ("deepseek-ai/DeepSeek-V3", "model.layers.0.self_attn.q_b_proj.weight", 64, True),
        ("deepseek-ai/DeepSeek-V3", "model.layers.0.self_attn.q_b_proj.weight", 128, False),
        ("deepseek-ai/DeepSeek-V3", "model.layers.0.self_attn.kv_b_proj.weight", 128, True),
        ("deepseek-ai/DeepSeek-V3", "model.layers.0.mlp.gate_proj.weight", 16, True),
        ("deepseek-ai/DeepSeek-V3", "model.layers.0.mlp.gate_proj.weight", 32, False),
        ("deepseek-ai/DeepSeek-V3", "model.layers.3.mlp.shared_experts.up_proj.weight", 16, True),
        ("deepseek-ai/DeepSeek-V3", "model.layers.3.mlp.shared_experts.up_proj.weight", 32, False),
        ("ZhipuAI/GLM-4.5", "model.layers.3.mlp.shared_experts.down_proj.weight", 4, True),
        ("ZhipuAI/GLM-4.5", "model.layers.3.mlp.shared_experts.down_proj.weight", 8, False),
        ("ZhipuAI/GLM-4.5", "model.layers.0.self_attn.o_proj.weight", 32, True),
    ],
)
def test_fp8_alignment_table(model_id, name, tp, ok):
    from ascend.models import find_spec

    spec = find_spec(published_model_args(model_id), name)
    problem = fp8_alignment_problem(spec, attn_tp=tp, moe_tp=1)
    assert (problem is None) == ok, problem
    if not ok:
        assert f"TP {tp}" in problem and "128" in problem


def test_shape_check_form():
    from ascend.errors import CheckpointError

    args = ModelArgs.from_config(CONFIGS["glm4_moe"])
    spec = tensor_specs(args)[0]
    c = ShardCoords.for_rank(1, 2)
    assert shard_slice(spec, spec.shape, c) == shard_slice(spec, c)
    with pytest.raises(CheckpointError, match="model.embed_tokens.weight has shape"):
        shard_slice(spec, (1, 2), c)
    with pytest.raises(TypeError, match="find_spec"):
        shard_slice(spec.name, c)


def test_indivisible_heads_are_refused():
    args = ModelArgs.from_config(CONFIGS["glm_moe_dsa"])
    q_b = next(s for s in tensor_specs(args) if s.name.endswith("q_b_proj.weight"))
    with pytest.raises(PlanError, match="TP 16"):
        shard_slice(q_b, ShardCoords.for_rank(0, 16))  # 8 heads over 16 ranks
    with pytest.raises(PlanError, match="parallel.ep"):
        ShardCoords.for_rank(0, 8, ep=3)
