"""``torch.ops.ascend.*``: the operators as torch custom ops, with CPU, NPU and fake kernels.

The CPU kernel is ``backends/cpu.py``; the NPU kernel (dispatch key PrivateUse1, which torch_npu
names ``npu``) is ``backends/npu.py`` and loads torch_npu only when an NPU tensor arrives; the fake
kernels give output shapes and dtypes for ``FakeTensorMode``, ``torch.compile`` and meta tracing.
Data-dependent sizes are avoided by design: ``init_routing`` always returns N*K rows.

Importing this module registers the ops once per process.
"""

from __future__ import annotations

import torch

from ascend.ops.moe import api
from ascend.ops.moe.backends import cpu

NAMESPACE = "ascend"

SCHEMAS = {
    "gating_topk": "gating_topk(Tensor logits, int k, *, Tensor? bias=None, int n_group=1, int topk_group=1, "
                   "int group_select_mode=1, int norm_type=1, int renorm=0, float routed_scaling_factor=1.0, "
                   "float eps=1e-20) -> (Tensor, Tensor)",
    "init_routing": "init_routing(Tensor x, Tensor expert_ids, int num_experts, *, int[]? active_expert_range=None, "
                    "int expert_tokens_num_type=1) -> (Tensor, Tensor, Tensor)",
    "grouped_matmul": "grouped_matmul(Tensor x, Tensor weight, Tensor group_list, int group_list_type=1) -> Tensor",
    "token_unpermute": "token_unpermute(Tensor permuted, Tensor sorted_indices, Tensor? probs=None) -> Tensor",
    "dynamic_quant": "dynamic_quant(Tensor x, *, Tensor? smooth_scales=None) -> (Tensor, Tensor)",
    "expert_mlp": "expert_mlp(Tensor x_sorted, Tensor tokens_per_expert, Tensor w13, Tensor w2, "
                  "int group_list_type=1) -> Tensor",
    "fused_moe": "fused_moe(Tensor x, Tensor router_logits, Tensor w13, Tensor w2, *, int top_k, Tensor? bias=None, "
                 "int n_group=1, int topk_group=1, float routed_scaling_factor=1.0, bool norm_topk_prob=True, "
                 "str scoring_func='sigmoid') -> Tensor",
}


def _fused_moe_with(backend_name: str):
    def kernel(x, router_logits, w13, w2, *, top_k, bias=None, n_group=1, topk_group=1, routed_scaling_factor=1.0,
               norm_topk_prob=True, scoring_func="sigmoid"):
        return api._fused_moe(api.get_backend(backend_name), x, router_logits, w13, w2, top_k=top_k, bias=bias,
                              n_group=n_group, topk_group=topk_group, routed_scaling_factor=routed_scaling_factor,
                              norm_topk_prob=norm_topk_prob, scoring_func=scoring_func)

    return kernel


def _npu_kernel(op: str):
    def kernel(*args, **kwargs):
        return getattr(api.get_backend("npu"), op)(*args, **kwargs)

    return kernel


# Fake kernels: shapes and dtypes only.
def _gating_topk_fake(logits, k, **_):
    num_tokens = logits.shape[0]
    return logits.new_empty((num_tokens, k)), logits.new_empty((num_tokens, k), dtype=torch.int32)


def _init_routing_fake(x, expert_ids, num_experts, *, active_expert_range=None, expert_tokens_num_type=1):
    start, end = active_expert_range or (0, num_experts)
    slots = expert_ids.numel()
    return (x.new_empty((slots, x.shape[1])), x.new_empty((slots,), dtype=torch.int32),
            x.new_empty((end - start,), dtype=torch.int64))


def _grouped_matmul_fake(x, weight, group_list, group_list_type=1):
    return x.new_empty((x.shape[0], weight.shape[2]))


def _token_unpermute_fake(permuted, sorted_indices, probs=None):
    top_k = 1 if probs is None else probs.shape[1]
    return permuted.new_empty((sorted_indices.numel() // top_k, permuted.shape[1]))


def _dynamic_quant_fake(x, *, smooth_scales=None):
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


def _expert_mlp_fake(x_sorted, tokens_per_expert, w13, w2, group_list_type=1):
    return x_sorted.new_empty((x_sorted.shape[0], w2.shape[1]))


def _fused_moe_fake(x, router_logits, w13, w2, **_):
    return x.new_empty(x.shape)


FAKES = {
    "gating_topk": _gating_topk_fake,
    "init_routing": _init_routing_fake,
    "grouped_matmul": _grouped_matmul_fake,
    "token_unpermute": _token_unpermute_fake,
    "dynamic_quant": _dynamic_quant_fake,
    "expert_mlp": _expert_mlp_fake,
    "fused_moe": _fused_moe_fake,
}


def _register() -> torch.library.Library:
    lib = torch.library.Library(NAMESPACE, "DEF")
    for op, schema in SCHEMAS.items():
        lib.define(schema)
        cpu_kernel = _fused_moe_with("cpu") if op == "fused_moe" else getattr(cpu, op)
        npu_kernel = _fused_moe_with("npu") if op == "fused_moe" else _npu_kernel(op)
        lib.impl(op, cpu_kernel, "CPU")
        lib.impl(op, npu_kernel, "PrivateUse1")
        torch.library.register_fake(f"{NAMESPACE}::{op}", FAKES[op], lib=lib)
    return lib


_LIB = _register()
