"""Expert-parallel dispatch/combine over gloo: 2 and 4 processes equal the single-process fused_moe.

Every worker builds the same seeded weights and batch, runs ``fused_moe`` on the whole batch
(the single-process result, computed in the same process so thread settings match), then its own
share of the tokens through route -> dispatch -> expert_mlp (local experts only) -> combine, and
checks that its rows are bit-identical. Splits include a rank with zero tokens; few tokens over
many experts leave experts (and sometimes ranks) empty.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ascend.ops import moe

NUM_EXPERTS, HIDDEN, INTER, TOP_K = 16, 32, 8, 4
TOKEN_SPLITS = {2: [4, 5], 4: [3, 0, 5, 1]}  # sums = the 9 tokens of _problem


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem(dtype):
    gen = torch.Generator().manual_seed(1234)
    total = 9
    x = torch.randn(total, HIDDEN, generator=gen).to(dtype)
    logits = torch.randn(total, NUM_EXPERTS, generator=gen)
    bias = torch.randn(NUM_EXPERTS, generator=gen) * 0.1
    w13 = (torch.randn(NUM_EXPERTS, 2 * INTER, HIDDEN, generator=gen) / HIDDEN**0.5).to(dtype)
    w2 = (torch.randn(NUM_EXPERTS, HIDDEN, INTER, generator=gen) / INTER**0.5).to(dtype)
    return x, logits, bias, w13, w2


ROUTING = dict(n_group=4, topk_group=2, routed_scaling_factor=2.5)


def _ep_forward(x, logits, bias, w13_local, w2_local, group):
    weights, ids = moe.route(logits, TOP_K, bias=bias, **ROUTING)
    recv_x, counts, handle = moe.dispatch(x, ids, weights, group, num_experts=NUM_EXPERTS)
    assert counts.shape == (w13_local.shape[0],) and int(counts.sum()) == recv_x.shape[0]
    out = moe.expert_mlp(recv_x, counts, w13_local, w2_local)
    return moe.combine(out, handle)


def _worker(rank: int, world: int, port: int, with_tp: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        splits = TOKEN_SPLITS[world]
        start, end = sum(splits[:rank]), sum(splits[: rank + 1])
        local = NUM_EXPERTS // world
        with pytest.raises(ValueError, match="divisible"):  # checked before any collective
            moe.dispatch(torch.randn(1, HIDDEN), torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, 1),
                         num_experts=NUM_EXPERTS + 1)
        for dtype in (torch.float32, torch.bfloat16):
            x, logits, bias, w13, w2 = _problem(dtype)
            full = moe.fused_moe(x, logits, w13, w2, top_k=TOP_K, bias=bias, **ROUTING)
            experts = slice(rank * local, (rank + 1) * local)
            y = _ep_forward(x[start:end], logits[start:end], bias, w13[experts], w2[experts], None)
            assert y.dtype == dtype and y.shape == (end - start, HIDDEN)
            assert torch.equal(y, full[start:end]), f"rank {rank} {dtype}: EP result differs from single process"
        if with_tp:
            _check_moe_tp(rank, world)
    finally:
        dist.destroy_process_group()


def _check_moe_tp(rank: int, world: int) -> None:
    """EP 2 x MoE-TP 2 as documented: dispatch over the EP group, I-sliced experts, all_reduce over TP."""
    tp = 2
    ep = world // tp
    ep_rank, tp_rank = divmod(rank, tp)
    tp_groups = [dist.new_group([e * tp + t for t in range(tp)]) for e in range(ep)]
    ep_groups = [dist.new_group([e * tp + t for e in range(ep)]) for t in range(tp)]
    x, logits, bias, w13, w2 = _problem(torch.float32)
    full = moe.fused_moe(x, logits, w13, w2, top_k=TOP_K, bias=bias, **ROUTING)
    splits = [4, 5]
    start, end = sum(splits[:ep_rank]), sum(splits[: ep_rank + 1])
    local = NUM_EXPERTS // ep
    experts = slice(ep_rank * local, (ep_rank + 1) * local)
    part = INTER // tp
    cols = slice(tp_rank * part, (tp_rank + 1) * part)
    w13_local = torch.cat([w13[experts, :INTER][:, cols], w13[experts, INTER:][:, cols]], dim=1)
    w2_local = w2[experts][:, :, cols]
    y = _ep_forward(x[start:end], logits[start:end], bias, w13_local, w2_local, ep_groups[tp_rank])
    dist.all_reduce(y, group=tp_groups[ep_rank])
    torch.testing.assert_close(y, full[start:end], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_dispatch_combine_equals_single_process(world):
    mp.spawn(_worker, args=(world, _free_port(), world == 4), nprocs=world, join=True)


def test_single_rank_dispatch_combine_is_a_round_trip(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        x, logits, bias, w13, w2 = _problem(torch.float32)
        y = _ep_forward(x, logits, bias, w13, w2, None)
        assert torch.equal(y, moe.fused_moe(x, logits, w13, w2, top_k=TOP_K, bias=bias, **ROUTING))
    finally:
        dist.destroy_process_group()
