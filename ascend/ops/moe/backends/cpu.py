"""CPU backend: vectorized PyTorch with the exact semantics of the Ascend MoE operators.

Every function here reproduces one torch_npu operator (see ``docs/operators.md`` and the op
notes in ``shared/reference/ascend-ops.md`` §0–§2): same ordering, index conventions, tie rules,
normalization and rounding. ``ascend.ops.moe.loops`` holds the plain per-expert loop twin of
each function; the tests compare the two.

The code is device-agnostic plain torch, so the NPU backend also uses it as its fallback when an
operator's constraints are not met.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

name = "cpu"
INT32_MAX = 2**31 - 1
# Experts with fewer rows than this use F.linear (GEMV-like, streams the weight once); larger ones
# the transposed GEMM. For half precision without native matmul the small path is PyTorch's half
# GEMV on the bf16 weight, larger experts convert the weight to fp32 (measured crossover, one
# thread, AVX2: about 4 rows).
FP32_GEMV_MAX_ROWS = 16
FP32_LINEAR_MIN_ROWS = 128  # from here x @ w^T (F.linear) is again the faster fp32 form
HALF_GEMV_MAX_ROWS = 4


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
    """Grouped top-k gating, semantics of ``npu_moe_gating_top_k``.

    logits: [T, E] any float; bias: [E] (selection only, added after the activation).
    norm_type 0 = softmax, 1 = sigmoid; group_select_mode 0 = group max, 1 = sum of its top-2.
    Weights are renormalized (``w / (sum(w) + eps)``) when ``norm_type == 1 or renorm == 1``,
    then multiplied by ``routed_scaling_factor``.
    Returns (weights [T, k] logits.dtype, expert_ids [T, k] int32), ordered by descending biased
    score, ties to the lower expert id.
    """
    scores = _activate(logits, norm_type)
    ids = select_experts(scores, k, bias=bias, n_group=n_group, topk_group=topk_group,
                         group_select_mode=group_select_mode)
    weights = scores.gather(1, ids)
    if norm_type == 1 or renorm == 1:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + eps)
    weights = weights * routed_scaling_factor
    return weights.to(logits.dtype), ids.to(torch.int32)


def _activate(logits: torch.Tensor, norm_type: int) -> torch.Tensor:
    """fp32 scores: softmax over experts (norm_type 0) or sigmoid (norm_type 1)."""
    x = logits.float()
    if norm_type == 0:
        return torch.softmax(x, dim=-1)
    if norm_type == 1:
        return torch.sigmoid(x)
    raise ValueError(f"norm_type must be 0 (softmax) or 1 (sigmoid), got {norm_type}")


def select_experts(
    scores: torch.Tensor,
    k: int,
    *,
    bias: torch.Tensor | None = None,
    n_group: int = 1,
    topk_group: int = 1,
    group_select_mode: int = 1,
) -> torch.Tensor:
    """Expert ids [T, k] int64 by stable descending sort of ``scores + bias`` (ties -> lower id),
    restricted to the ``topk_group`` best of ``n_group`` expert groups (discarded groups -> -inf)."""
    num_tokens, num_experts = scores.shape
    _check_gating_args(num_experts, k, n_group, topk_group)
    choice = scores if bias is None else scores + bias.float()
    if n_group > 1:
        grouped = choice.view(num_tokens, n_group, num_experts // n_group)
        if group_select_mode == 0:
            group_scores = grouped.amax(dim=-1)
        else:
            group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # values only: ties irrelevant
        kept = torch.sort(group_scores, dim=-1, descending=True, stable=True).indices[:, :topk_group]
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
        choice = grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).view(num_tokens, num_experts)
    return torch.sort(choice, dim=-1, descending=True, stable=True).indices[:, :k]


def _check_gating_args(num_experts: int, k: int, n_group: int, topk_group: int) -> None:
    if n_group < 1 or num_experts % n_group:
        raise ValueError(f"num_experts ({num_experts}) must be divisible by n_group ({n_group})")
    if not 1 <= topk_group <= n_group:
        raise ValueError(f"topk_group ({topk_group}) must be in [1, n_group={n_group}]")
    if not 1 <= k <= num_experts // n_group * topk_group:
        raise ValueError(
            f"k ({k}) must be in [1, experts per group x topk_group = {num_experts // n_group * topk_group}]"
        )


def init_routing(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    num_experts: int,
    *,
    active_expert_range: tuple[int, int] | list[int] | None = None,
    expert_tokens_num_type: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Permute tokens into expert-major order, semantics of ``npu_moe_init_routing_v2`` (dropless).

    x: [N, H]; expert_ids: [N, K] int; flat slot f = i*K + k (token-major).
    Only experts in ``active_expert_range = [start, end)`` (default all) are kept.
    Returns
      expanded_x [N*K, H] x.dtype: row j = x[order[j] // K] for j < valid (grouped by expert
        ascending, then token ascending); rows from ``valid`` on are zero;
      expanded_row_idx [N*K] int32: gather index (row_idx_type 0), slot f -> its row, -1 for
        slots whose expert is outside the range;
      tokens_per_expert [end-start] int64: counts (type 1) or cumsum (type 0).
    """
    start, end = (0, num_experts) if active_expert_range is None else (int(active_expert_range[0]), int(active_expert_range[1]))
    num_tokens, top_k = expert_ids.shape
    flat = expert_ids.reshape(-1).long()
    in_range = (flat >= start) & (flat < end)
    order = torch.argsort(torch.where(flat < start, INT32_MAX, flat), stable=True)
    valid = int(in_range.sum())
    expanded_x = x.new_empty((num_tokens * top_k, x.shape[1]))
    torch.index_select(x, 0, order[:valid] // top_k, out=expanded_x[:valid])
    expanded_x[valid:].zero_()
    row_idx = torch.full((num_tokens * top_k,), -1, dtype=torch.int32, device=x.device)
    row_idx[order[:valid]] = torch.arange(valid, dtype=torch.int32, device=x.device)
    counts = torch.bincount(flat[in_range] - start, minlength=end - start)[: end - start]
    return expanded_x, row_idx, _group_list(counts, expert_tokens_num_type)


def _group_list(counts: torch.Tensor, group_list_type: int) -> torch.Tensor:
    if group_list_type == 1:
        return counts.to(torch.int64)
    if group_list_type == 0:
        return counts.cumsum(0).to(torch.int64)
    raise ValueError(f"group_list_type must be 0 (cumsum) or 1 (counts), got {group_list_type}")


def group_counts(group_list: torch.Tensor, group_list_type: int) -> list[int]:
    """Per-group row counts (a Python list) from a type-0 (cumsum) or type-1 (counts) group list."""
    values = group_list.long()
    if group_list_type == 0:
        values = torch.diff(values, prepend=values.new_zeros(1))
    elif group_list_type != 1:
        raise ValueError(f"group_list_type must be 0 (cumsum) or 1 (counts), got {group_list_type}")
    return values.tolist()


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, group_list: torch.Tensor, group_list_type: int = 1) -> torch.Tensor:
    """Grouped matmul, semantics of ``npu_grouped_matmul`` (MoE case: split along M).

    x: [M, K]; weight: [E, K, N] (a transposed view of [E, N, K] is fine, no copy is made);
    group_list: [E] int64 counts (type 1) or cumsum (type 0). Row block e of x is multiplied by
    weight[e] (fp32 accumulation, output rounded to x.dtype). Returns y [M, N] x.dtype; rows past
    sum(group_list) are zero.
    """
    y = x.new_zeros((x.shape[0], weight.shape[2]))
    upcast = x.device.type == "cpu" and _upcast_matmul(x.dtype)
    start = 0
    for e, n in enumerate(group_counts(group_list, group_list_type)):
        if n:
            rows = slice(start, start + n)
            if upcast:
                y[rows] = torch.mm(x[rows].float(), weight[e].float())
            else:
                torch.mm(x[rows], weight[e], out=y[rows])
        start += n
    return y


@functools.cache
def _upcast_matmul(dtype: torch.dtype) -> bool:
    """Whether half-precision matmuls should run in fp32 on this CPU.

    Without AVX512-BF16/AMX (or AVX512-FP16) PyTorch's bf16/fp16 CPU matmul is a slow fallback
    (measured ~100x slower than fp32 on an AVX2 host), while converting the operands to fp32 and
    rounding the result back gives the same fp32-accumulated product the NPU computes.
    """
    if dtype == torch.bfloat16:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if dtype == torch.float16:
        return not torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return False


def token_unpermute(permuted: torch.Tensor, sorted_indices: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum back to token order, semantics of ``npu_moe_token_unpermute``.

    permuted: [M, H]; sorted_indices: [T*K] int (token-major gather index, -1 = no contribution);
    probs: [T, K] or None (K = 1). out[t] = sum_k probs[t, k] * permuted[sorted_indices[t*K + k]],
    products in the token dtype, then summed over k in fp32 (k ascending), rounded once.
    Returns [T, H] permuted.dtype.

    One [T, H] gather per k, accumulated in place: the same sums as materializing the [T, K, H]
    gather and reducing over k, at a third of the memory traffic.
    """
    top_k = 1 if probs is None else probs.shape[1]
    num_tokens = sorted_indices.numel() // top_k
    idx = sorted_indices.reshape(num_tokens, top_k).long()
    missing = idx < 0
    any_missing = bool(missing.any())
    idx = idx.clamp(min=0)
    weights = None if probs is None else probs.to(permuted.dtype)
    total = None
    for k in range(top_k):
        rows = permuted.index_select(0, idx[:, k])
        if any_missing:
            rows.masked_fill_(missing[:, k:k + 1], 0)
        if weights is not None:
            rows.mul_(weights[:, k:k + 1])
        if total is None:
            total = rows.float()
        else:
            total.add_(rows)
    return total.to(permuted.dtype)


def dynamic_quant(x: torch.Tensor, *, smooth_scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8, semantics of ``npu_dynamic_quant`` (``quant_mode="pertoken"``).

    x: [..., H] float; smooth_scales: [H] optional. xs = float(x) * smooth;
    scale = rowmax|xs| / 127; q = round_half_even(xs / scale).
    Returns (q int8 x.shape, scale fp32 x.shape[:-1]). All-zero rows give q = 0, scale = 0.
    """
    xs = x.float()
    if smooth_scales is not None:
        xs = xs * smooth_scales.float()
    scale = xs.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(xs / safe.unsqueeze(-1)).clamp_(-128, 127).to(torch.int8)
    return q, scale


def expert_mlp(x_sorted: torch.Tensor, tokens_per_expert: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
               group_list_type: int = 1) -> torch.Tensor:
    """The routed experts (SwiGLU) on rows already grouped by expert.

    x_sorted: [M, H]; tokens_per_expert: [E] int64 (group_list_type 1 counts / 0 cumsum);
    w13: [E, 2I, H] (gate rows then up rows); w2: [E, H, I].
    Row block e -> down_e(silu(gate_e(x)) * up_e(x)), with h, the activation and the output
    rounded to x.dtype (as a half-precision GEMM with fp32 accumulation does). Returns [M, H]
    x.dtype; rows past the group-list sum are zero.

    Only non-empty experts' weights are read, each once, straight from the caller's tensors.
    On CPU the experts are spread over ``torch.get_num_threads()`` threads (the caller's and a
    pool's), each running whole experts with single-threaded BLAS: a GEMM of a few rows makes
    poor use of several cores (MKL's GEMV is single-threaded, its small-row GEMMs gain little
    from threads), while whole experts side by side keep every core streaming weights. Threads
    take the next expert (largest first) as they finish one, so a core slowed by other work,
    such as OpenMP workers still spinning after the previous op, takes fewer of them. An
    expert's result depends only on its own rows, never on the thread or on the other experts,
    so expert-parallel ranks reproduce it bit for bit.
    """
    counts = group_counts(tokens_per_expert, group_list_type)
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    out = x_sorted.new_empty((x_sorted.shape[0], w2.shape[1]))  # every row up to the sum is written
    out[starts[-1]:].zero_()
    upcast = x_sorted.device.type == "cpu" and _upcast_matmul(x_sorted.dtype)
    groups = sorted(((e, starts[e], n) for e, n in enumerate(counts) if n), key=lambda g: -g[2])

    def run(queue) -> None:
        for e, start, n in queue:
            _expert(x_sorted[start:start + n], w13[e], w2[e], upcast, out[start:start + n])

    threads = torch.get_num_threads() if x_sorted.device.type == "cpu" else 1
    if threads == 1 or len(groups) < 2 or torch.is_grad_enabled():  # graph building is not thread-safe
        run(groups)
    else:
        _run_shared(run, iter(groups), min(threads, len(groups)))
    return out


def _run_shared(run, queue, threads: int) -> None:
    """``run(queue)`` on the caller's thread and ``threads - 1`` pool threads at once, every
    thread single-threaded inside, with the caller's grad and inference modes (both are per thread)."""
    inference = torch.is_inference_mode_enabled()

    def in_pool() -> None:
        with torch.inference_mode(inference), torch.no_grad():
            run(queue)

    helpers = [_pool(threads - 1).submit(in_pool) for _ in range(threads - 1)]
    own = torch.get_num_threads()
    torch.set_num_threads(1)  # per thread (OpenMP ICV and MKL's local setting)
    try:
        run(queue)  # next() on a shared list iterator is atomic under the GIL
    finally:
        torch.set_num_threads(own)
        for fut in helpers:
            fut.result()


def _expert(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, upcast: bool, out: torch.Tensor) -> None:
    """One expert's SwiGLU on its n rows x [n, H], written into ``out`` [n, H] x.dtype.

    Few rows: ``F.linear`` (a GEMV-like call that streams the weight once; for half precision
    without native support, PyTorch's half GEMV, which reads the weight as is). From 16 to 127
    fp32 rows (and from 4 half rows): the transposed form ``w13 @ x^T`` (the weight is the large
    left operand, the token columns the right one), which MKL ran faster there on an AVX2 host;
    half weights are converted to fp32 first, far faster than a half GEMM without native support.
    From 128 fp32 rows ``F.linear`` is the faster form again.
    """
    n, inter = x.shape[0], w2.shape[1]
    if n < (HALF_GEMV_MAX_ROWS if upcast else FP32_GEMV_MAX_ROWS) or (not upcast and n >= FP32_LINEAR_MIN_ROWS):
        h = F.linear(x, w13)
        act = F.silu(h[:, :inter]).mul_(h[:, inter:])
        if torch.is_grad_enabled():  # out= ops do not record autograd
            out.copy_(F.linear(act, w2))
        else:
            torch.mm(act, w2.t(), out=out)  # = F.linear(act, w2), without the copy
        return
    compute = torch.float32 if upcast else x.dtype
    # [H, n], contiguous: a strided column block of a [H, M] matrix sends MKL down a slow path for small n
    x_t = x.to(compute).t().contiguous()
    h_t = torch.mm(w13.to(compute), x_t).to(x.dtype)  # [2I, n]
    act_t = F.silu(h_t[:inter]).mul_(h_t[inter:])  # [I, n]
    out.copy_(torch.mm(w2.to(compute), act_t.to(compute)).t())  # [n, H], rounded to x.dtype


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` workers whose torch ops run single-threaded."""
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="ascend-moe",
                                                    initializer=torch.set_num_threads, initargs=(1,))
    return pool


def _forget_pools() -> None:
    _POOLS.clear()  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pools)
