"""Terms of the memory model, each against a hand computation or a published figure."""

from __future__ import annotations

import pytest
from plan_helpers import settings

from ascend.hardware import chip_profile
from ascend.models import published_model_args
from ascend.models.precision import PrecisionPolicy
from ascend.models.tensors import TensorSpec
from ascend.plan.memory import (
    hccl_buffsize,
    hccl_bytes,
    kv_bytes_per_token,
    moe_dispatch_buffer_mb,
    tensor_bytes,
    workspace_bytes,
)
from ascend.plan.planner import make_plan, parallel_layout, require_fit

A3 = dict(chip="ascend-a3", nodes=1, devices_per_node=16)


def test_tensor_bytes_per_format():
    # fp8: 1 B + float32 per 128×128 block (kv_a_proj 576×7168: 5×56 blocks, partial last row block)
    assert tensor_bytes((576, 7168), "fp8") == 576 * 7168 + 5 * 56 * 4
    # w8a8 (dynamic): 1 B + float32 weight_scale and weight_offset [out, 1], as written
    assert tensor_bytes((2048, 7168), "w8a8") == 2048 * 7168 + 2048 * 8
    # static W8A8: 1 B + int32 quant_bias and float32 deq_scale [out] + float32 input_scale, input_offset [1]
    assert tensor_bytes((2048, 7168), "w8a8_static") == 2048 * 7168 + 2048 * 8 + 8
    assert tensor_bytes((2048,), "f32_folded") == 2048 * 4  # a static linear's bias, written fp32
    assert tensor_bytes((2048, 7168), "bf16") == 2048 * 7168 * 2
    assert tensor_bytes((256,), "bf16", "f32") == 1024  # e_score_correction_bias stays fp32


def test_precision_rules_first_match_wins_and_norms_stay_bf16():
    rules = (("*.mlp.experts.*", "w8a8"), ("*.mlp.*", "fp8"))
    bf16, w8a8 = PrecisionPolicy("bf16", rules), PrecisionPolicy("w8a8", rules)
    expert = TensorSpec("model.layers.3.mlp.experts.0.up_proj.weight", (8, 8), "bf16", "expert", "routed_expert",
                        quantizable=True)
    dense = TensorSpec("model.layers.0.mlp.up_proj.weight", (8, 8), "bf16", "column", "dense_mlp", quantizable=True)
    router = TensorSpec("model.layers.3.mlp.gate.weight", (8, 8), "bf16", "replicated", "router")
    attn = TensorSpec("model.layers.3.self_attn.o_proj.weight", (8, 8), "bf16", "row", "attention", quantizable=True)
    assert bf16.format_of(expert.name, quantizable=expert.quantizable) == "w8a8"
    assert bf16.format_of(dense.name, quantizable=dense.quantizable) == "fp8"
    assert w8a8.format_of(router.name, quantizable=router.quantizable) == "bf16"  # matches *.mlp.* but is never quantized
    assert w8a8.format_of(attn.name, quantizable=attn.quantizable) == "w8a8"  # default


def test_kv_per_token_matches_checkpoints_md():
    # checkpoints.md §1.4: DeepSeek-V3 576·2·61 = 70,272 B; GLM-5 576·2·78 = 89,856 B + indexer
    # (128 values per layer, BF16 in xLLM: "Indexer Cache always uses original precision");
    # GLM-4.5 GQA 2·8·128·2·92 = 376,832 B before TP splitting of KV heads
    kv = kv_bytes_per_token(published_model_args("deepseek-ai/DeepSeek-V3"), settings(**A3))
    assert (kv.attention, kv.indexer) == (70272, 0)
    kv = kv_bytes_per_token(published_model_args("ZhipuAI/GLM-5"), settings(**A3))
    assert (kv.attention, kv.indexer) == (89856, 128 * 2 * 78)
    glm45 = published_model_args("ZhipuAI/GLM-4.5")
    assert kv_bytes_per_token(glm45, settings(**A3, dp=16)).per_token == 376832  # TP 1
    assert kv_bytes_per_token(glm45, settings(**A3, dp=4)).per_token == 376832 // 4  # TP 4: 2 KV heads
    assert kv_bytes_per_token(glm45, settings(**A3, dp=1)).per_token == 376832 // 8  # TP 16 > 8: one head
    # speculative decoding adds the MTP layer's cache
    kv = kv_bytes_per_token(published_model_args("ZhipuAI/GLM-5"), settings(**A3, speculative_tokens=1))
    assert kv.layers == 79 and kv.per_token == 79 * (576 * 2 + 128 * 2)


def test_hccl_buffers():
    glm5, a3 = published_model_args("ZhipuAI/GLM-5"), chip_profile("ascend-a3")
    # dp 2, ep 16 on 16 ranks: attention TP 8, EP 16, MoE TP 1, DP 2 -> 3 communicators × 2 × 200 MB
    h = hccl_bytes(settings(**A3, dp=2, ep=16, env={"HCCL_BUFFSIZE": "200"}), glm5, a3)
    assert h.communicators == ("attention TP", "expert parallel", "data parallel")
    assert h.total == 3 * 2 * 200 * 2**20
    # unset: xLLM sizes its TP and EP domains at 512 MB (xllm mapping_npu.cpp), HCCL the rest at 200
    h = hccl_bytes(settings(**A3, dp=2, ep=16), glm5, a3)
    assert h.buffsize_mb == {"attention TP": 512, "expert parallel": 512, "data parallel": 200}
    assert hccl_bytes(settings(**A3), glm5, chip_profile("cpu")).total == 0


def test_hccl_buffsize_is_the_dispatch_need_when_it_exceeds_xllms_default():
    # ascend-ops.md §1.13 worked example: DeepSeek, one A3, EP 16, max_bs 16 -> 125,763,584 B ≈ 120 MiB
    ds = published_model_args("deepseek-ai/DeepSeek-V3")
    assert moe_dispatch_buffer_mb("ascend-a3", ds, 16, 16) == -(-125_763_584 // 2**20)
    small = hccl_buffsize(settings(**A3, ep=16, max_seqs=16), ds)
    assert (small.mb, small.source) == (None, "default")  # 120 MB < 512: xLLM's own default holds
    big = hccl_buffsize(settings(**A3, ep=16, max_seqs=128), ds)
    assert big.need_mb > 512 and big.mb >= big.need_mb * 1.1 and big.mb % 8 == 0 and big.source == "computed"
    user = hccl_buffsize(settings(**A3, ep=16, max_seqs=128, env={"HCCL_BUFFSIZE": "300"}), ds)
    assert (user.mb, user.source) == (300, "serve.env")
    h = hccl_bytes(settings(**A3, ep=16, max_seqs=128), ds, chip_profile("ascend-a3"))
    assert set(h.buffsize_mb.values()) == {big.mb}  # HCCL_BUFFSIZE applies to every domain


def test_workspace_terms():
    args = published_model_args("ZhipuAI/GLM-5")
    ws = workspace_bytes(args, settings(**A3, ep=16, max_tokens_per_batch=8192, max_seqs=32))
    assert ws.hidden == 8192 * 6144 * 2 * 6
    assert ws.attention == 8192 * 4 * (2 * 256 + 256) * 2 + 8192 * 32 * 128 * 2
    assert ws.moe == (2 * 8192 * 8 // 16) * (6144 + 3 * 2048) * 2 + 8192 * 6144 * 2
    assert ws.logits == 32 * 9680 * 4


def test_layout_ranges():
    args = published_model_args("ZhipuAI/GLM-4.5")
    layout = parallel_layout(args, settings(chip="ascend-a3", nodes=2, devices_per_node=16, dp=2, ep=32))
    r = layout[21]  # node 1, dp group 1, attention TP rank 5 of 16 -> heads 30-35, KV head 2
    assert (r.node, r.local_device, r.dp_rank, r.attn_tp_rank) == (1, 5, 1, 5)
    assert r.heads == (30, 36) and r.kv_heads == (2, 3)
    assert (r.ep_rank, r.experts, r.moe_tp_rank) == (21, (105, 110), 0)
    assert r.vocab == (5 * 9472, 6 * 9472)


def test_not_fitting_raises_check_failed_with_computed_fixes():
    args = published_model_args("ZhipuAI/GLM-5")
    inputs = settings(**A3, ep=16, max_model_len=200000, memory_utilization=0.9,
                        precision="w8a8")
    plan = make_plan(inputs, args, chip_profile("ascend-a3"))
    assert not plan.fits and plan.kv_tokens < 200000
    # each suggestion was re-planned; the context one is exactly what the KV cache holds
    assert any(s.startswith(f"--set serve.max_model_len={plan.kv_tokens}") for s in plan.suggestions)
    assert any(s.startswith("--set hardware.nodes=") for s in plan.suggestions)
    nodes = next(s for s in plan.suggestions if s.startswith("--set hardware.nodes="))
    n = int(nodes.split("=")[1].split()[0])
    bigger = make_plan(settings(**{**A3, "nodes": n}, ep=16 * n, max_model_len=200000, memory_utilization=0.9,
                                  precision="w8a8"), args, chip_profile("ascend-a3"))
    assert bigger.fits
    with pytest.raises(Exception) as err:
        require_fit(plan)
    assert err.value.exit_code == 3 and "does not fit" in err.value.line() and "try --set" in err.value.line()


def test_warning_when_fewer_max_len_sequences_than_max_seqs():
    args = published_model_args("ZhipuAI/GLM-4.7")
    plan = make_plan(settings(**A3, dp=2, ep=16, max_model_len=133000, max_seqs=64, precision="w8a8"),
                     args, chip_profile("ascend-a3"))
    assert plan.fits and plan.concurrent_max_len_seqs < 64
    assert plan.warnings and "serve.max_seqs is 64" in plan.warnings[0]
