"""NPU backend: the same functions as ``backends/cpu.py``, computed by torch_npu operators.

torch_npu is imported on first use, never at module import. Calls pass only the keyword
arguments they need (builds paired with CANN 8.x lack newer ones such as ``input_ids``,
``tid2eid``, ``x_dtype``). Inputs are cast to what the ops require: int32 expert ids, int64 group
lists. Where an op's documented constraints are not met the portable torch implementation of
``backends/cpu.py`` runs instead on the same device (it is plain torch), so results keep the same
semantics. Nothing here has run on a real NPU in this repository; ``ascend ops check --backend npu``
is the parity check to run on an Ascend host.
"""

from __future__ import annotations

import importlib
import sys

import torch

from ascend.errors import BackendUnavailable
from ascend.ops.moe.backends import cpu

name = "npu"
MAX_GATING_EXPERTS = 2048  # npu_moe_gating_top_k: E <= 2048
MAX_GMM_GROUPS = 1024  # npu_grouped_matmul: <= 1024 groups


def availability() -> tuple[bool, str | None]:
    """(True, None) when torch_npu imports and reports an NPU; else (False, the reason)."""
    try:
        torch_npu = _import()
    except BackendUnavailable as err:
        return False, err.why
    try:
        if not torch_npu.npu.is_available():
            return False, "torch_npu imported but torch_npu.npu.is_available() is False (no NPU visible)"
    except Exception as err:  # a broken driver install raises here
        return False, f"torch_npu.npu.is_available() failed: {type(err).__name__}: {err}"
    return True, None


def _import():
    if "torch_npu" in sys.modules and sys.modules["torch_npu"] is not None:
        return sys.modules["torch_npu"]
    try:
        return importlib.import_module("torch_npu")
    except Exception as err:  # ImportError, or an OSError from a missing CANN library
        raise BackendUnavailable(
            "the npu operator backend cannot be used",
            why=f"import torch_npu failed ({type(err).__name__}: {err})",
            fix="install the torch-npu build matching your torch and CANN (pip install torch-npu) on an Ascend host, "
                "or use the cpu backend",
        ) from None


def torch_npu():
    """The torch_npu module, or ``BackendUnavailable`` (one line: which import failed, what to install)."""
    return _import()


def gating_topk(logits, k, *, bias=None, n_group=1, topk_group=1, group_select_mode=1, norm_type=1, renorm=0,
                routed_scaling_factor=1.0, eps=1e-20):
    """``npu_moe_gating_top_k``; softmax with ``renorm=1`` is normalized here (the op supports renorm=0 only)."""
    num_experts = logits.shape[-1]
    per_group = num_experts // max(n_group, 1)
    if num_experts > MAX_GATING_EXPERTS or num_experts % n_group or per_group <= 2:
        return cpu.gating_topk(logits, k, bias=bias, n_group=n_group, topk_group=topk_group,
                               group_select_mode=group_select_mode, norm_type=norm_type, renorm=renorm,
                               routed_scaling_factor=routed_scaling_factor, eps=eps)
    cpu._check_gating_args(num_experts, k, n_group, topk_group)
    renorm_here = norm_type == 0 and renorm == 1
    kwargs = dict(k_group=topk_group, group_count=n_group, group_select_mode=group_select_mode, renorm=0,
                  norm_type=norm_type, routed_scaling_factor=1.0 if renorm_here else routed_scaling_factor, eps=eps)
    if bias is not None:
        kwargs["bias"] = bias.to(logits.dtype)  # the op wants bias in x's dtype
    weights, ids, _ = torch_npu().npu_moe_gating_top_k(logits, k, **kwargs)
    if renorm_here:
        w = weights.float()
        weights = (w / (w.sum(dim=-1, keepdim=True) + eps) * routed_scaling_factor).to(logits.dtype)
    return weights, ids.to(torch.int32)


def init_routing(x, expert_ids, num_experts, *, active_expert_range=None, expert_tokens_num_type=1):
    """``npu_moe_init_routing_v2`` dropless, gather index (row_idx_type 0, the op default)."""
    num_tokens, top_k = expert_ids.shape
    kwargs = dict(active_num=num_tokens * top_k, expert_num=num_experts, expert_tokens_num_type=expert_tokens_num_type,
                  expert_tokens_num_flag=True)
    if active_expert_range is not None:
        kwargs["active_expert_range"] = [int(active_expert_range[0]), int(active_expert_range[1])]
    expanded_x, row_idx, counts, _ = torch_npu().npu_moe_init_routing_v2(x, expert_ids.to(torch.int32), **kwargs)
    return expanded_x, row_idx, counts.to(torch.int64)


def grouped_matmul(x, weight, group_list, group_list_type=1):
    """``npu_grouped_matmul`` split along M: one x, one [E, K, N] weight, one output."""
    if weight.shape[0] > MAX_GMM_GROUPS:
        return cpu.grouped_matmul(x, weight, group_list, group_list_type)
    return torch_npu().npu_grouped_matmul([x], [weight], group_list=group_list.to(torch.int64), split_item=2,
                                          group_type=0, group_list_type=group_list_type)[0]


def token_unpermute(permuted, sorted_indices, probs=None):
    """``npu_moe_token_unpermute``; -1 slots are pointed at row 0 with weight 0 (the op has no -1 rule)."""
    idx = sorted_indices.reshape(-1).to(torch.int32)
    missing = idx < 0
    if bool(missing.any()):
        top_k = 1 if probs is None else probs.shape[1]
        keep = (~missing).view(-1, top_k)
        probs = keep.to(permuted.dtype) if probs is None else probs * keep.to(probs.dtype)
        idx = idx.clamp(min=0)
    kwargs = {} if probs is None else {"probs": probs}
    return torch_npu().npu_moe_token_unpermute(permuted, idx, **kwargs)


def dynamic_quant(x, *, smooth_scales=None):
    """``npu_dynamic_quant`` per token."""
    kwargs = {} if smooth_scales is None else {"smooth_scales": smooth_scales}
    return torch_npu().npu_dynamic_quant(x, **kwargs)


def expert_mlp(x_sorted, tokens_per_expert, w13, w2, group_list_type=1):
    """GMM(x, w13^T) -> ``npu_swiglu`` (gate half first) -> GMM(., w2^T), as vllm-ascend's unquantized MLP."""
    h = grouped_matmul(x_sorted, w13.transpose(1, 2), tokens_per_expert, group_list_type)
    act = torch_npu().npu_swiglu(h, dim=-1)
    return grouped_matmul(act, w2.transpose(1, 2), tokens_per_expert, group_list_type)
