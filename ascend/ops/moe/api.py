"""The public operator API; the backend (``cpu`` or ``npu``) is chosen once, then every call uses it.

Choice: ``use_backend("cpu" | "npu" | "auto")``, else the environment variable
``ASCEND_OPS_BACKEND`` (same values), else ``cpu``. ``auto`` takes ``npu`` when torch_npu and an
NPU are present. Asking for ``npu`` on a host without them raises ``BackendUnavailable``.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from ascend.errors import BackendUnavailable
from ascend.ops.moe.backends import cpu

BACKENDS = ("cpu", "npu", "auto")
_active: ModuleType | None = None


def get_backend(name: str | None = None) -> ModuleType:
    """The backend module for ``name`` (default: the active one, chosen on first use)."""
    global _active
    if name is None:
        if _active is None:
            _active = get_backend(os.environ.get("ASCEND_OPS_BACKEND", "cpu"))
        return _active
    if name == "cpu":
        return cpu
    if name in ("npu", "auto"):
        from ascend.ops.moe.backends import npu

        ok, reason = npu.availability()
        if ok:
            return npu
        if name == "auto":
            return cpu
        raise BackendUnavailable("the npu operator backend cannot be used", why=reason,
                                 fix="run on an Ascend host with CANN and the matching torch-npu "
                                     "(pip install torch-npu), or use --backend cpu")
    raise BackendUnavailable(f"unknown operator backend {name!r}", fix=f"use one of {', '.join(BACKENDS)}")


def use_backend(name: str) -> ModuleType:
    """Make ``name`` the backend of every later call; returns it."""
    global _active
    _active = get_backend(name)
    return _active


def gating_topk(
    logits: torch.Tensor,
    k: int,
    *,
    bias: torch.Tensor | None = None,
    n_group: int = 1,
    topk_group: int = 1,
    group_select_mode: int = 1,
    norm_type: int = 1,
    renorm: int = 0,
    routed_scaling_factor: float = 1.0,
    eps: float = 1e-20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``npu_moe_gating_top_k``: logits [T, E] -> (weights [T, k] logits.dtype, expert_ids [T, k] int32).

    Scores = softmax (norm_type 0) or sigmoid (1) in fp32; ``bias`` [E] is added after the
    activation and steers selection only; with ``n_group > 1`` only the ``topk_group`` groups with
    the best score (mode 1: sum of the group's top-2, mode 0: its max) compete; ids ordered by
    descending biased score, ties to the lower id; weights are the unbiased scores, divided by
    ``sum + eps`` when ``norm_type == 1 or renorm == 1``, times ``routed_scaling_factor``.
    """
    return get_backend().gating_topk(logits, k, bias=bias, n_group=n_group, topk_group=topk_group,
                                     group_select_mode=group_select_mode, norm_type=norm_type, renorm=renorm,
                                     routed_scaling_factor=routed_scaling_factor, eps=eps)


def init_routing(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    num_experts: int,
    *,
    active_expert_range: tuple[int, int] | None = None,
    expert_tokens_num_type: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``npu_moe_init_routing_v2`` (dropless): x [N, H], expert_ids [N, K] ->
    (expanded_x [N*K, H] grouped by expert then token, expanded_row_idx [N*K] int32 gather index
    (slot i*K+k -> row, -1 outside ``active_expert_range``), tokens_per_expert [end-start] int64
    counts (type 1, default) or cumsum (type 0)). Rows of expanded_x past the valid count are zero
    on cpu and unspecified on npu."""
    return get_backend().init_routing(x, expert_ids, num_experts, active_expert_range=active_expert_range,
                                      expert_tokens_num_type=expert_tokens_num_type)


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, group_list: torch.Tensor, group_list_type: int = 1) -> torch.Tensor:
    """``npu_grouped_matmul`` (split M): x [M, K], weight [E, K, N], group_list [E] int64 ->
    y [M, N]; row block e times weight[e]. Rows past sum(group_list): zero on cpu, unspecified on npu."""
    return get_backend().grouped_matmul(x, weight, group_list, group_list_type)


def token_unpermute(permuted: torch.Tensor, sorted_indices: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """``npu_moe_token_unpermute``: out[t] = sum_k probs[t,k] * permuted[sorted_indices[t*K+k]]
    (-1 contributes nothing; products in the token dtype). Returns [T, H]."""
    return get_backend().token_unpermute(permuted, sorted_indices, probs)


def dynamic_quant(x: torch.Tensor, *, smooth_scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``npu_dynamic_quant`` per token: scale = rowmax|x| / 127 (fp32), q = round_half_even(x / scale)
    int8. Returns (q [..., H] int8, scale [...] fp32)."""
    return get_backend().dynamic_quant(x, smooth_scales=smooth_scales)


def expert_mlp(x_sorted: torch.Tensor, tokens_per_expert: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
               group_list_type: int = 1) -> torch.Tensor:
    """The grouped SwiGLU experts on rows grouped by expert (output of ``init_routing`` or ``dispatch``).

    x_sorted [M, H]; tokens_per_expert [E] int64; w13 [E, 2I, H] (gate rows, then up rows);
    w2 [E, H, I]. Returns [M, H]: row block e -> w2[e] @ (silu(gate_e x) * up_e x).
    """
    return get_backend().expert_mlp(x_sorted, tokens_per_expert, w13, w2, group_list_type)


def route(
    router_logits: torch.Tensor,
    top_k: int,
    *,
    bias: torch.Tensor | None = None,
    n_group: int = 1,
    topk_group: int = 1,
    routed_scaling_factor: float = 1.0,
    norm_topk_prob: bool = True,
    scoring_func: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model router in model-config terms -> (weights [T, k] fp32, expert_ids [T, k] int32).

    Maps to ``gating_topk`` with ``group_select_mode=1`` (sum of top-2, as DeepSeek-V3 / GLM),
    ``norm_type`` from ``scoring_func`` and ``renorm=norm_topk_prob``. Sigmoid without
    ``norm_topk_prob`` is the one case the NPU op cannot express (it always renormalizes sigmoid):
    the ids come from the op and the weights are the selected raw sigmoid scores.
    """
    return _route(get_backend(), router_logits, top_k, bias=bias, n_group=n_group, topk_group=topk_group,
                  routed_scaling_factor=routed_scaling_factor, norm_topk_prob=norm_topk_prob,
                  scoring_func=scoring_func)


def _route(backend, router_logits, top_k, *, bias, n_group, topk_group, routed_scaling_factor, norm_topk_prob,
           scoring_func):
    norm_type = _norm_type(scoring_func)
    logits = router_logits.float()
    raw_sigmoid = norm_type == 1 and not norm_topk_prob
    weights, ids = backend.gating_topk(logits, top_k, bias=bias, n_group=n_group, topk_group=topk_group,
                               group_select_mode=1, norm_type=norm_type, renorm=int(norm_topk_prob),
                               routed_scaling_factor=1.0 if raw_sigmoid else routed_scaling_factor)
    if raw_sigmoid:
        weights = torch.sigmoid(logits).gather(1, ids.long()) * routed_scaling_factor
    return weights, ids


def _norm_type(scoring_func: str) -> int:
    try:
        return {"softmax": 0, "sigmoid": 1}[scoring_func]
    except KeyError:
        raise ValueError(f"scoring_func must be 'softmax' or 'sigmoid', got {scoring_func!r}") from None


def fused_moe(
    x: torch.Tensor,
    router_logits: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    *,
    top_k: int,
    bias: torch.Tensor | None = None,
    n_group: int = 1,
    topk_group: int = 1,
    routed_scaling_factor: float = 1.0,
    norm_topk_prob: bool = True,
    scoring_func: str = "sigmoid",
) -> torch.Tensor:
    """Routed experts of one MoE layer: route -> init_routing -> expert_mlp -> token_unpermute.

    x: [T, H]; router_logits: [T, E] (compute them in fp32 as the published models do);
    w13: [E, 2I, H] (gate rows first, then up); w2: [E, H, I]; bias: [E] ``e_score_correction_bias``.
    Returns y [T, H] x.dtype = sum_k w[t,k] * expert_{id[t,k]}(x[t]). Shared experts: add them yourself.
    """
    return _fused_moe(get_backend(), x, router_logits, w13, w2, top_k=top_k, bias=bias, n_group=n_group,
                      topk_group=topk_group, routed_scaling_factor=routed_scaling_factor,
                      norm_topk_prob=norm_topk_prob, scoring_func=scoring_func)


def _fused_moe(backend, x, router_logits, w13, w2, *, top_k, bias, n_group, topk_group, routed_scaling_factor,
               norm_topk_prob, scoring_func):
    weights, ids = _route(backend, router_logits, top_k, bias=bias, n_group=n_group, topk_group=topk_group,
                          routed_scaling_factor=routed_scaling_factor, norm_topk_prob=norm_topk_prob,
                          scoring_func=scoring_func)
    return _moe_experts(backend, x, weights, ids, w13, w2)


def moe_experts(x: torch.Tensor, weights: torch.Tensor, expert_ids: torch.Tensor, w13: torch.Tensor,
                w2: torch.Tensor) -> torch.Tensor:
    """The routed experts for given routing: x [T, H], weights/expert_ids [T, k] -> y [T, H]."""
    return _moe_experts(get_backend(), x, weights, expert_ids, w13, w2)


def _moe_experts(backend, x, weights, expert_ids, w13, w2):
    expanded_x, row_idx, counts = backend.init_routing(x, expert_ids, w13.shape[0])
    out = backend.expert_mlp(expanded_x, counts, w13, w2, 1)
    return backend.token_unpermute(out, row_idx, weights)
