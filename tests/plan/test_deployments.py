"""The planner agrees with documented deployments (reference/deployments.md).

Every documented working configuration must "fit"; the documented impossible ones must not.
Each case names its source. W8A8 means msModelSlim's practice (ascend-ops.md §4.4): every
quantizable tensor int8 except ``kv_b_proj``; non-quantizable tensors stay BF16.

Not modelled (no W4A8 format in recipes): the vllm-ascend / SGLang GLM-5 W4A8 rows. MindIE and
cann-recipes rows are skipped (their memory fraction is not documented).
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from plan_helpers import settings

from ascend.hardware import chip_profile
from ascend.models import published_model_args
from ascend.plan.memory import ModelTables
from ascend.plan.planner import make_plan

W8A8 = dict(precision="w8a8", rules=(("*.self_attn.kv_b_proj.*", "bf16"),))
A3 = dict(chip="ascend-a3", devices_per_node=16)
A2 = dict(chip="ascend-910b", devices_per_node=8)


@lru_cache(maxsize=None)
def _tables(model_id: str) -> ModelTables:
    return ModelTables(published_model_args(model_id))


def _plan(model_id: str, **kw):
    inputs = settings(**kw)
    return make_plan(inputs, _tables(model_id), chip_profile(inputs.chip), suggest=False)


WORKING = [
    # deployments.md §1.1, vllm-ascend DeepSeek-R1.md: R1-W8A8, 1× A3, DP4 TP4 EP, 16384, util 0.92,
    # --max-num-seqs 16 --max-num-batched-tokens 4096, MTP 3
    ("vllm-ascend R1 W8A8 1×A3", "deepseek-ai/DeepSeek-R1",
     dict(**A3, nodes=1, dp=4, ep=16, max_model_len=16384, memory_utilization=0.92, max_seqs=16,
          max_tokens_per_batch=4096, speculative_tokens=3, **W8A8)),
    # §1.1 DeepSeek-R1.md: the same on 2× A2 (16 NPUs), DP4 TP4 EP
    ("vllm-ascend R1 W8A8 2×A2", "deepseek-ai/DeepSeek-R1",
     dict(**A2, nodes=2, dp=4, ep=16, max_model_len=16384, memory_utilization=0.92, max_seqs=16,
          max_tokens_per_batch=4096, speculative_tokens=3, **W8A8)),
    # §1.1 DeepSeek-V3.1.md: V3.1 W8A8 (deepseek_v3 architecture), 1× A3, DP4 TP4 EP, 16384, 0.92
    ("vllm-ascend V3.1 W8A8 1×A3", "deepseek-ai/DeepSeek-V3",
     dict(**A3, nodes=1, dp=4, ep=16, max_model_len=16384, memory_utilization=0.92, **W8A8)),
    # §1.1 GLM5.md: GLM-5 W8A8, 1× A3, DP1 TP16 EP, 40960, util 0.95
    ("vllm-ascend GLM-5 W8A8 1×A3", "ZhipuAI/GLM-5",
     dict(**A3, nodes=1, dp=1, ep=16, max_model_len=40960, memory_utilization=0.95, **W8A8)),
    # §1.1 GLM5.md: GLM-5 BF16, 2× A3, DP2 TP16 EP, 8192, 0.95, MTP (adjust_weight.py adds copies)
    ("vllm-ascend GLM-5 BF16 2×A3", "ZhipuAI/GLM-5",
     dict(**A3, nodes=2, dp=2, ep=32, max_model_len=8192, memory_utilization=0.95, speculative_tokens=1)),
    # §1.1 GLM4.x.md: GLM-4.7-W8A8-floatmtp, 16 dies, DP2 TP8 EP, 133000, 0.9, HCCL_BUFFSIZE=512
    ("vllm-ascend GLM-4.7 W8A8 1×A3", "ZhipuAI/GLM-4.7",
     dict(**A3, nodes=1, dp=2, ep=16, max_model_len=133000, memory_utilization=0.9, env={"HCCL_BUFFSIZE": "512"},
          speculative_tokens=1, **W8A8)),
    # §1.1 nightly GLM5_1-W8A8-A3-dual-nodes.yaml: 2× A3, DP2 TP16 EP, 133120, MTP 3, HCCL_BUFFSIZE 200
    # (util not given: vLLM's default 0.9)
    ("vllm-ascend GLM-5.1 W8A8 2×A3", "ZhipuAI/GLM-5.1",
     dict(**A3, nodes=2, dp=2, ep=32, max_model_len=133120, memory_utilization=0.9, env={"HCCL_BUFFSIZE": "200"},
          speculative_tokens=3, **W8A8)),
    # §1.3 xLLM quick_start_GLM5.md: GLM-5 W8A8 (Eco-Tech build), 1× A3, ep 8 / dp 1, util 0.85,
    # max_tokens_per_batch 8192, max_seqs 32, MTP 1. xLLM has no context-length flag: we require KV for
    # one full 8192-token batch.
    ("xLLM GLM-5 W8A8 1×A3 ep8", "Eco-Tech/GLM-5-W8A8-xLLM",
     dict(**A3, nodes=1, dp=1, ep=8, max_model_len=8192, memory_utilization=0.85, max_seqs=32,
          max_tokens_per_batch=8192, speculative_tokens=1, **W8A8)),
    # §1.3 same doc, other revision: ep 16 / dp 2, util 0.92, MTP 3
    ("xLLM GLM-5 W8A8 1×A3 ep16 dp2", "Eco-Tech/GLM-5-W8A8-xLLM",
     dict(**A3, nodes=1, dp=2, ep=16, max_model_len=8192, memory_utilization=0.92, max_seqs=32,
          max_tokens_per_batch=8192, speculative_tokens=3, **W8A8)),
    # §1.3 same doc: 2× A3, ep 16 / dp 1, max_seqs 4, util not given (xLLM default 0.8, xllm.md §3.4),
    # max_tokens_per_batch default 10240
    ("xLLM GLM-5 W8A8 2×A3", "Eco-Tech/GLM-5-W8A8-xLLM",
     dict(**A3, nodes=2, dp=1, ep=16, max_model_len=8192, memory_utilization=0.8, max_seqs=4,
          max_tokens_per_batch=10240, **W8A8)),
    # §1.3 xLLM docs/en/features/mtp.md: DeepSeek-V3 + MTP 1, 16 ranks, ep 1 / dp 1, util 0.90,
    # max_tokens_per_batch 10000, max_seqs 256 (chip/precision not stated: A3 dies, W8A8)
    ("xLLM DeepSeek-V3 MTP 16 ranks", "deepseek-ai/DeepSeek-V3",
     dict(**A3, nodes=1, dp=1, ep=1, max_model_len=10000, memory_utilization=0.9, max_seqs=256,
          max_tokens_per_batch=10000, speculative_tokens=1, **W8A8)),
    # §1.3 xLLM multi_machine.md: DeepSeek-R1, 2 machines × 16, max_tokens_per_batch 40000, no chunked
    # prefill (so one 40000-token prompt must fit), util default 0.8 (precision not stated: W8A8)
    ("xLLM DeepSeek-R1 2×16", "deepseek-ai/DeepSeek-R1",
     dict(**A3, nodes=2, dp=1, ep=1, max_model_len=40000, memory_utilization=0.8, max_seqs=256,
          max_tokens_per_batch=40000, **W8A8)),
]

NOT_FITTING = [
    # issue 2 and deployments.md §1.2 (SGLang: "GLM-5 BF16: ≥ 2× A3"; §1.5 "BF16 needs 2× the GPUs of FP8")
    ("GLM-5 BF16 1×A3", "ZhipuAI/GLM-5",
     dict(**A3, nodes=1, dp=1, ep=16, max_model_len=8192, memory_utilization=0.95)),
    # issue 2; deployments.md §1.1 runs DeepSeek-R1 W8A8 on 2× A2 (16 NPUs), never on one
    ("DeepSeek-V3 W8A8 1×A2", "deepseek-ai/DeepSeek-V3",
     dict(**A2, nodes=1, dp=1, ep=8, max_model_len=8192, memory_utilization=0.95, **W8A8)),
    # deployments.md §2 pain point 1: GLM-5.1 W8A8 on 8× 910B3 OOMs (W4A8 is the A2 single-node option)
    ("GLM-5.1 W8A8 1×A2", "ZhipuAI/GLM-5.1",
     dict(**A2, nodes=1, dp=1, ep=8, max_model_len=8192, memory_utilization=0.95, **W8A8)),
]


@pytest.mark.parametrize("name, model_id, kw", WORKING, ids=[c[0] for c in WORKING])
def test_documented_deployment_fits(name, model_id, kw):
    plan = _plan(model_id, **kw)
    assert plan.fits, (name, plan.kv_tokens, plan.seq_tokens, plan.devices[0].as_dict())
    assert plan.kv_tokens >= plan.seq_tokens and plan.concurrent_max_len_seqs >= plan.settings.layout.dp


@pytest.mark.parametrize("name, model_id, kw", NOT_FITTING, ids=[c[0] for c in NOT_FITTING])
def test_documented_impossible_does_not_fit(name, model_id, kw):
    plan = _plan(model_id, **kw)
    assert not plan.fits
    # these fail on weights alone, not on a borderline KV budget
    assert plan.devices[0].weights_total > plan.devices[0].budget


def test_routed_expert_bytes_match_the_sanity_table():
    """deployments.md §1.6: routed-expert weights per rank ≈ routed params × bytes / ranks."""
    from ascend.hardware import GiB

    glm5 = _plan("ZhipuAI/GLM-5", **A3, nodes=1, dp=1, ep=16, max_model_len=8192, **W8A8)
    # 724.8B routed params at 1 B + per-channel scale/offset -> ≈ 45.3 GB per die
    assert glm5.devices[0].weights["routed experts"] / 1e9 == pytest.approx(45.3, rel=0.01)
    r1 = _plan("deepseek-ai/DeepSeek-R1", **A3, nodes=1, dp=4, ep=16, max_model_len=8192, **W8A8)
    assert r1.devices[0].weights["routed experts"] / 1e9 == pytest.approx(40.9, rel=0.01)
    bf16 = _plan("ZhipuAI/GLM-5", **A3, nodes=2, dp=2, ep=32, max_model_len=8192)
    assert bf16.devices[0].weights["routed experts"] / 1e9 == pytest.approx(45.3, rel=0.01)
    assert bf16.devices[0].weights["routed experts"] < 45.3e9 * 1.001 < 64 * GiB
