"""Expert parallelism: ``dispatch`` tokens to the ranks that own their experts, ``combine`` them back.

Each rank of the EP group owns ``L = num_experts / ep`` consecutive experts: rank r holds experts
``[r*L, (r+1)*L)``. Call sequence in a MoE layer (every rank, on its own tokens)::

    weights, ids = moe.route(router_logits, top_k, bias=..., ...)          # [T, k] fp32, [T, k] int32
    recv_x, counts, handle = moe.dispatch(x, ids, weights, group, num_experts=E)
    out = moe.expert_mlp(recv_x, counts, w13_local, w2_local)             # w13_local [L, 2I, H]
    y = moe.combine(out, handle)                                         # [T, H] = fused_moe(x, ...)
    y = y + shared_experts(x)

Transport is ``torch.distributed.all_to_all_single`` on the group's backend (gloo on CPU, hccl on
NPU); rows travel as raw bytes, so any dtype arrives bit-exact. Row order on the receiver follows
MC2 dispatch: grouped by local expert ascending, then source rank, then source token. When the
tokens of a batch are split over the ranks in rank order, every expert sees the same rows in the
same order as in a single process, and ``combine`` reproduces ``fused_moe`` exactly.

MoE-TP (experts' intermediate dimension split over a TP group inside each EP slot): give every
TP rank the same tokens, dispatch over the EP group made of the ranks with the same TP index,
run ``expert_mlp`` on the rank's I-slice (w13 gate and up rows of the slice, w2 columns of the
slice), ``combine``, then ``all_reduce(y, group=tp_group)``: combine is linear, so reducing the
[T, H] result is equal to (and cheaper than) reducing the [R, H] expert rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ascend.ops.moe.api import get_backend


@dataclass
class DispatchHandle:
    """What ``combine`` needs to undo a ``dispatch``; opaque to callers, documented for debugging.

    group: the EP process group (None = default group).
    num_tokens, top_k: this rank's T and k.
    row_idx: [T*k] int32, token-major slot i*k+j -> its row in the send buffer (the inverse of
      the expert-major send order; the ``init_routing`` gather index).
    send_counts: rows sent to each rank, [ep] ints; recv_counts: rows received from each rank.
    recv_order: [R] int64, row j of ``recv_x`` = row recv_order[j] of the rank-major receive buffer.
    weights: [T, k] routing weights, applied in ``combine`` (on the tokens' home rank).
    """

    group: dist.ProcessGroup | None
    num_tokens: int
    top_k: int
    row_idx: torch.Tensor
    send_counts: list[int]
    recv_counts: list[int]
    recv_order: torch.Tensor
    weights: torch.Tensor


def dispatch(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    weights: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    num_experts: int,
) -> tuple[torch.Tensor, torch.Tensor, DispatchHandle]:
    """Send each (token, slot) row to the rank owning its expert.

    x: [T, H]; expert_ids: [T, k] int (global ids); weights: [T, k] (kept for ``combine``);
    num_experts: E, divisible by the group size.
    Returns (recv_x [R, H] grouped by local expert, tokens_per_local_expert [L] int64 counts
    (group_list_type 1), handle).
    """
    world = dist.get_world_size(group)
    if num_experts % world:
        raise ValueError(f"num_experts ({num_experts}) must be divisible by the EP group size ({world})")
    local = num_experts // world
    num_tokens, top_k = expert_ids.shape
    send_x, row_idx, per_expert = get_backend().init_routing(x, expert_ids, num_experts)
    send_counts = per_expert.view(world, local).sum(dim=1)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=group)
    send_counts_list, recv_counts_list = send_counts.tolist(), recv_counts.tolist()
    # The receiver needs each row's local expert: send it with the rows.
    send_local = torch.repeat_interleave(torch.arange(num_experts, device=x.device) % local, per_expert)
    recv_x = _exchange(send_x, send_counts_list, recv_counts_list, group)
    recv_local = _exchange(send_local, send_counts_list, recv_counts_list, group)
    recv_order = torch.argsort(recv_local, stable=True)
    handle = DispatchHandle(group, num_tokens, top_k, row_idx, send_counts_list, recv_counts_list, recv_order, weights)
    return recv_x.index_select(0, recv_order), torch.bincount(recv_local, minlength=local), handle


def combine(expert_out: torch.Tensor, handle: DispatchHandle) -> torch.Tensor:
    """Return expert rows to their tokens' ranks and sum them with the routing weights.

    expert_out: [R, H], rows in ``recv_x`` order. Returns y [T, H] expert_out.dtype:
    y[t] = sum_j weights[t, j] * row(t, j), products in the row dtype (``token_unpermute``).
    """
    rank_major = torch.empty_like(expert_out).index_copy_(0, handle.recv_order, expert_out)
    back = _exchange(rank_major, handle.recv_counts, handle.send_counts, handle.group)
    return get_backend().token_unpermute(back, handle.row_idx, handle.weights)


def _exchange(rows: torch.Tensor, send_counts: list[int], recv_counts: list[int], group) -> torch.Tensor:
    """all_to_all_single of rows [N, ...] as raw bytes (bit-exact for every dtype)."""
    send = rows.contiguous()
    trailing = send.shape[1:]
    raw = send.reshape(send.shape[0], -1).view(torch.uint8) if send.numel() else \
        torch.empty((0, _row_bytes(send)), dtype=torch.uint8, device=send.device)
    out = torch.empty((sum(recv_counts), raw.shape[1]), dtype=torch.uint8, device=send.device)
    dist.all_to_all_single(out, raw, output_split_sizes=recv_counts, input_split_sizes=send_counts, group=group)
    return out.view(send.dtype).reshape(-1, *trailing)


def _row_bytes(t: torch.Tensor) -> int:
    n = 1
    for d in t.shape[1:]:
        n *= d
    return n * t.element_size()
