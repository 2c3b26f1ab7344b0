"""init_routing, grouped_matmul, token_unpermute, dynamic_quant, expert_mlp against the loop twins."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ascend.ops import moe
from ascend.ops.moe import loops


@st.composite
def routing_case(draw):
    """Random ids over few experts (many empty experts), 0..6 tokens, an optional active range."""
    tokens = draw(st.integers(0, 6))
    num_experts = draw(st.integers(1, 9))
    k = draw(st.integers(1, min(num_experts, 4)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    # distinct ids per row, as routers produce them
    ids = torch.stack([torch.randperm(num_experts, generator=gen)[:k] for _ in range(tokens)]) if tokens else \
        torch.zeros((0, k), dtype=torch.int64)
    ids = ids.to(draw(st.sampled_from([torch.int32, torch.int64])))
    start = draw(st.integers(0, num_experts - 1))
    end = draw(st.integers(start + 1, num_experts))
    active = (start, end) if draw(st.booleans()) else None
    hidden = draw(st.integers(1, 5))
    x = torch.randn(tokens, hidden, generator=gen)
    return x, ids, num_experts, active


@settings(max_examples=80, deadline=None)
@given(routing_case(), st.sampled_from([0, 1]))
def test_init_routing_matches_reference(case, count_type):
    x, ids, num_experts, active = case
    got = moe.init_routing(x, ids, num_experts, active_expert_range=active, expert_tokens_num_type=count_type)
    want = loops.init_routing(x, ids, num_experts, active_expert_range=active, expert_tokens_num_type=count_type)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)


def test_init_routing_index_conventions():
    x = torch.arange(3.0).unsqueeze(1)  # token i has value i
    ids = torch.tensor([[2, 0], [0, 1], [2, 1]], dtype=torch.int32)  # flat slots 0..5
    expanded_x, row_idx, counts = moe.init_routing(x, ids, 4)
    # sorted by expert, then token: e0 <- t0, t1; e1 <- t1, t2; e2 <- t0, t2; e3 empty
    assert expanded_x[:, 0].tolist() == [0, 1, 1, 2, 0, 2]
    # gather index: slot i*K+k -> row. slot0 (t0,e2)->4, slot1 (t0,e0)->0, slot2 (t1,e0)->1, ...
    assert row_idx.tolist() == [4, 0, 1, 2, 5, 3]
    assert counts.tolist() == [2, 2, 2, 0] and counts.dtype == torch.int64
    _, row_idx, cumsum = moe.init_routing(x, ids, 4, active_expert_range=(1, 3), expert_tokens_num_type=0)
    assert row_idx.tolist() == [2, -1, -1, 0, 3, 1] and cumsum.tolist() == [2, 4]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=5), st.integers(0, 3), st.sampled_from([0, 1]),
       st.sampled_from([torch.float32, torch.bfloat16]))
def test_grouped_matmul_matches_reference(counts, extra_rows, group_list_type, dtype):
    gen = torch.Generator().manual_seed(sum(counts) * 7 + extra_rows)
    rows = sum(counts) + extra_rows  # rows past the group-list sum must come out zero
    x = torch.randn(rows, 6, generator=gen).to(dtype)
    weight = torch.randn(len(counts), 5, 6, generator=gen).to(dtype).transpose(1, 2)  # [E, K, N] view
    group_list = torch.tensor(counts)
    if group_list_type == 0:
        group_list = group_list.cumsum(0)
    got = moe.grouped_matmul(x, weight, group_list, group_list_type)
    want = loops.grouped_matmul(x, weight, group_list, group_list_type)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not got[sum(counts):].any()


@settings(max_examples=40, deadline=None)
@given(routing_case(), st.booleans())
def test_token_unpermute_inverts_init_routing(case, with_probs):
    x, ids, num_experts, active = case
    expanded_x, row_idx, _ = loops.init_routing(x, ids, num_experts, active_expert_range=active)
    probs = torch.rand(ids.shape) if with_probs else None
    if probs is None and ids.shape[1] != 1:
        ids = ids[:, :1]
        expanded_x, row_idx, _ = loops.init_routing(x, ids, num_experts, active_expert_range=active)
    got = moe.token_unpermute(expanded_x, row_idx, probs)
    torch.testing.assert_close(got, loops.token_unpermute(expanded_x, row_idx, probs))
    # -1 slots (experts outside the range) contribute nothing; the rest give back x * sum(probs)
    keep = (row_idx >= 0).view(ids.shape).float()
    weight = keep if probs is None else probs * keep
    torch.testing.assert_close(got, x * weight.sum(dim=1, keepdim=True))


def test_dynamic_quant_rounds_half_to_even_and_matches_reference():
    x = torch.tensor([[127.0, 0.5, 1.5, -2.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    q, scale = moe.dynamic_quant(x)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert q[0].tolist() == [127, 0, 2, -2, 0]  # scale 1: round(0.5)=0, round(1.5)=2, round(-2.5)=-2
    assert q[1].tolist() == [0] * 5 and scale[1] == 0
    y = torch.randn(3, 4, 16, dtype=torch.bfloat16)
    smooth = torch.rand(16) + 0.5
    got, want = moe.dynamic_quant(y, smooth_scales=smooth), loops.dynamic_quant(y, smooth_scales=smooth)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and got[1].shape == (3, 4)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=4), st.sampled_from([0, 1]))
def test_expert_mlp_matches_reference(counts, group_list_type):
    gen = torch.Generator().manual_seed(len(counts) * 31 + sum(counts))
    x = torch.randn(sum(counts), 8, generator=gen)
    w13 = torch.randn(len(counts), 6, 8, generator=gen)
    w2 = torch.randn(len(counts), 8, 3, generator=gen)
    group_list = torch.tensor(counts) if group_list_type == 1 else torch.tensor(counts).cumsum(0)
    torch.testing.assert_close(moe.expert_mlp(x, group_list, w13, w2, group_list_type),
                               loops.expert_mlp(x, group_list, w13, w2, group_list_type), rtol=1e-5, atol=1e-5)


def test_token_unpermute_sums_exactly_like_the_reference():
    """Products in the token dtype, then one fp32 sum over k rounded once: bit-equal to the loop
    reference in fp32 and bf16, with -1 slots and an inf in a row no slot points at."""
    gen = torch.Generator().manual_seed(5)
    tokens, top_k, hidden = 6, 4, 16
    for dtype in (torch.float32, torch.bfloat16):
        permuted = torch.randn(tokens * top_k + 1, hidden, generator=gen).to(dtype)
        permuted[-1] = float("inf")  # never referenced: must not leak in through a masked slot
        idx = torch.randperm(tokens * top_k, generator=gen).to(torch.int32)
        idx[::5] = -1
        probs = torch.rand(tokens, top_k, generator=gen)
        got = moe.token_unpermute(permuted, idx, probs)
        assert torch.equal(got, loops.token_unpermute(permuted, idx, probs)), dtype
        assert torch.isfinite(got).all()


def test_expert_mlp_thread_pool_is_bit_exact_and_keeps_autograd():
    """The pooled path (no grad) equals the caller-thread path (autograd on) and a one-thread run
    bit for bit, and an expert's rows do not depend on which other experts are present (the
    expert-parallel property); with autograd on, gradients reach the weights."""
    gen = torch.Generator().manual_seed(11)
    counts = [0, 1, 3, 20, 0, 130, 2, 17]
    hidden, inter = 32, 24
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(sum(counts), hidden, generator=gen).to(dtype)
        w13 = (torch.randn(len(counts), 2 * inter, hidden, generator=gen) / 6).to(dtype)
        w2 = (torch.randn(len(counts), hidden, inter, generator=gen) / 5).to(dtype)
        group_list = torch.tensor(counts)
        with torch.inference_mode():
            pooled = moe.expert_mlp(x, group_list, w13, w2)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                one_thread = moe.expert_mlp(x, group_list, w13, w2)
        finally:
            torch.set_num_threads(threads)
        w13_param = w13.clone().requires_grad_(True)
        caller = moe.expert_mlp(x, group_list, w13_param, w2)
        caller.float().sum().backward()
        assert torch.equal(pooled, one_thread) and torch.equal(pooled, caller.detach()), dtype
        assert w13_param.grad is not None and w13_param.grad[5].abs().sum() > 0
        # experts 3..5 alone (as on an expert-parallel rank) give the same rows
        start = sum(counts[:3])
        local = moe.expert_mlp(x[start:start + sum(counts[3:6])], group_list[3:6], w13[3:6], w2[3:6])
        assert torch.equal(local, pooled[start:start + sum(counts[3:6])].detach()), dtype
