"""Expert-dispatch operators for MoE layers: one API, two backends with identical semantics.

Stages (names used everywhere)::

    router_logits ──route/gating_topk──▶ (weights, expert_ids)
    x ──init_routing──▶ rows grouped by expert ──expert_mlp (grouped_matmul, SwiGLU)──▶ expert rows
      ──token_unpermute (weights)──▶ y                      (fused_moe = all of the above)

Expert parallel (each EP rank holds experts [rank*L, (rank+1)*L), L = E / ep)::

    weights, ids = route(logits, k, ...)                          # every rank, its own tokens
    recv_x, counts, handle = dispatch(x, ids, weights, group, num_experts=E)
    out = expert_mlp(recv_x, counts, w13_local, w2_local)          # local experts only
    y = combine(out, handle)                                       # [T, H], this rank's tokens
    # + shared experts; with MoE-TP (I split over a TP group): all_reduce(y, tp_group) after combine

Backends: ``cpu`` (vectorized torch, the default) and ``npu`` (torch_npu, loaded lazily); pick once
with ``use_backend()`` or ``ASCEND_OPS_BACKEND``. ``reference`` holds the plain loop twins.
The operators are also registered as ``torch.ops.ascend.*`` (CPU, NPU and fake kernels), see
``ascend.ops.moe.library``. Details and exact semantics: ``docs/operators.md``.
"""

from ascend.ops.moe import library as _library  # noqa: F401  (registers torch.ops.ascend.*)
from ascend.ops.moe.api import (
    dynamic_quant,
    expert_mlp,
    fused_moe,
    gating_topk,
    get_backend,
    grouped_matmul,
    init_routing,
    moe_experts,
    route,
    token_unpermute,
    use_backend,
)
from ascend.ops.moe.parallel import DispatchHandle, combine, dispatch

__all__ = [
    "DispatchHandle",
    "combine",
    "dispatch",
    "dynamic_quant",
    "expert_mlp",
    "fused_moe",
    "gating_topk",
    "get_backend",
    "grouped_matmul",
    "init_routing",
    "moe_experts",
    "route",
    "token_unpermute",
    "use_backend",
]
