"""The NPU backend through its contract, with a stand-in ``torch_npu`` that records every call.

The stand-in answers with our CPU kernels, using the real ops' defaults for omitted keyword
arguments and asserting what the real ops require (int32 ids, int64 group lists, list-in/list-out
grouped matmul, no -1 in unpermute indices, renorm=0 on the gating op). Numerics on a real NPU are
not verified here: that is ``ascend ops check --backend npu`` on an Ascend host.

Every test that runs through the stand-in is marked ``contract_only``: its results come from our own
CPU kernels, so an "equal to the CPU backend" assertion there checks argument plumbing, dtypes and
call order, never the NPU's numerics (``pytest -m "not contract_only"`` leaves them out).
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from ascend.errors import BackendUnavailable
from ascend.ops import moe
from ascend.ops.moe import api, library
from ascend.ops.moe.backends import cpu, npu
from ascend.ops.moe.check import run_check


class StandInTorchNpu(types.ModuleType):
    def __init__(self):
        super().__init__("torch_npu")
        self.calls: list[tuple[str, tuple, dict]] = []
        self.npu = types.SimpleNamespace(is_available=lambda: True)

    def _record(self, name, args, kwargs):
        self.calls.append((name, args, kwargs))

    def npu_moe_gating_top_k(self, x, k, *, bias=None, k_group=1, group_count=1, group_select_mode=0, renorm=0,
                             norm_type=0, out_flag=False, routed_scaling_factor=1.0, eps=1e-20):
        self._record("npu_moe_gating_top_k", (x, k), dict(bias=bias, k_group=k_group, group_count=group_count,
                     group_select_mode=group_select_mode, renorm=renorm, norm_type=norm_type,
                     routed_scaling_factor=routed_scaling_factor, eps=eps))
        assert renorm == 0, "torch_npu documents renorm=0 only"
        assert bias is None or bias.dtype == x.dtype
        assert x.shape[-1] % group_count == 0 and x.shape[-1] // group_count > 2
        y, ids = cpu.gating_topk(x, k, bias=bias, n_group=group_count, topk_group=k_group,
                                 group_select_mode=group_select_mode, norm_type=norm_type, renorm=renorm,
                                 routed_scaling_factor=routed_scaling_factor, eps=eps)
        return y, ids, torch.empty(0)

    def npu_moe_init_routing_v2(self, x, expert_idx, *, scale=None, offset=None, active_num=-1, expert_capacity=-1,
                                expert_num=-1, drop_pad_mode=0, expert_tokens_num_type=0,
                                expert_tokens_num_flag=False, quant_mode=-1, active_expert_range=(), row_idx_type=0):
        self._record("npu_moe_init_routing_v2", (x, expert_idx), dict(active_num=active_num, expert_num=expert_num,
                     expert_tokens_num_type=expert_tokens_num_type, expert_tokens_num_flag=expert_tokens_num_flag,
                     active_expert_range=active_expert_range, row_idx_type=row_idx_type, quant_mode=quant_mode,
                     drop_pad_mode=drop_pad_mode))
        assert expert_idx.dtype == torch.int32 and expert_tokens_num_flag and row_idx_type == 0 and quant_mode == -1
        rng = tuple(active_expert_range) if len(active_expert_range) else None
        ex, row_idx, counts = cpu.init_routing(x, expert_idx, expert_num, active_expert_range=rng,
                                               expert_tokens_num_type=expert_tokens_num_type)
        return ex, row_idx, counts, torch.empty(0)

    def npu_grouped_matmul(self, x, weight, *, group_list=None, split_item=0, group_type=None, group_list_type=0,
                           **unused):
        self._record("npu_grouped_matmul", (x, weight), dict(group_list=group_list, split_item=split_item,
                     group_type=group_type, group_list_type=group_list_type, **unused))
        assert isinstance(x, list) and isinstance(weight, list) and len(x) == len(weight) == 1
        assert group_list.dtype == torch.int64 and split_item in (2, 3) and group_type == 0 and not unused
        return [cpu.grouped_matmul(x[0], weight[0], group_list, group_list_type)]

    def npu_swiglu(self, x, dim=-1):
        self._record("npu_swiglu", (x,), dict(dim=dim))
        a, b = x.chunk(2, dim=dim)
        return F.silu(a) * b

    def npu_moe_token_unpermute(self, permuted, sorted_indices, probs=None, padded_mode=False, restore_shape=None):
        self._record("npu_moe_token_unpermute", (permuted, sorted_indices), dict(probs=probs))
        assert sorted_indices.dtype == torch.int32 and bool((sorted_indices >= 0).all())
        return cpu.token_unpermute(permuted, sorted_indices, probs)

    def npu_dynamic_quant(self, x, *, smooth_scales=None, group_index=None, dst_type=None):
        self._record("npu_dynamic_quant", (x,), dict(smooth_scales=smooth_scales))
        return cpu.dynamic_quant(x, smooth_scales=smooth_scales)

    def names(self):
        return [c[0] for c in self.calls]

    def last(self, name):
        return next(c for c in reversed(self.calls) if c[0] == name)


@pytest.fixture
def fake_npu(monkeypatch):
    """The stand-in as ``torch_npu`` (tests using it are contract-only: see the module docstring)."""
    stand_in = StandInTorchNpu()
    monkeypatch.setitem(sys.modules, "torch_npu", stand_in)
    monkeypatch.setattr(api, "_active", None)
    yield stand_in


def test_missing_torch_npu_is_a_one_line_backend_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # import torch_npu -> ImportError
    with pytest.raises(BackendUnavailable) as err:
        api.get_backend("npu")
    line = err.value.line()
    assert "\n" not in line and "import torch_npu failed" in line and "pip install torch-npu" in line
    assert err.value.exit_code == 2
    assert api.get_backend("auto") is cpu


@pytest.mark.contract_only
def test_torch_npu_without_device_is_unavailable(fake_npu):
    fake_npu.npu = types.SimpleNamespace(is_available=lambda: False)
    with pytest.raises(BackendUnavailable, match="no NPU visible"):
        api.get_backend("npu")


@pytest.mark.contract_only
def test_parity_check_passes_through_the_stand_in(fake_npu):
    results = run_check("npu", device="cpu")
    assert results and all(r.ok for r in results), [r for r in results if not r.ok]
    assert {"npu_moe_gating_top_k", "npu_moe_init_routing_v2", "npu_grouped_matmul", "npu_swiglu",
            "npu_moe_token_unpermute", "npu_dynamic_quant"} <= set(fake_npu.names())


@pytest.mark.contract_only
def test_gating_arguments(fake_npu):
    backend = api.get_backend("npu")
    logits, bias = torch.randn(4, 32, dtype=torch.bfloat16), torch.randn(32)
    w, ids = backend.gating_topk(logits, 8, bias=bias, n_group=8, topk_group=4, routed_scaling_factor=2.5)
    _, (x, k), kw = fake_npu.last("npu_moe_gating_top_k")
    assert x is logits and k == 8
    assert kw["k_group"] == 4 and kw["group_count"] == 8 and kw["group_select_mode"] == 1 and kw["norm_type"] == 1
    assert kw["bias"].dtype == torch.bfloat16  # cast to the logits dtype, as vllm-ascend does
    assert ids.dtype == torch.int32 and w.dtype == torch.bfloat16
    want_w, want_ids = cpu.gating_topk(logits, 8, bias=bias.to(torch.bfloat16), n_group=8, topk_group=4,
                                       routed_scaling_factor=2.5)
    assert torch.equal(ids, want_ids) and torch.equal(w, want_w)


@pytest.mark.contract_only
def test_gating_softmax_renorm_is_done_outside_the_op(fake_npu):
    backend = api.get_backend("npu")
    logits = torch.randn(5, 16)
    w, ids = backend.gating_topk(logits, 4, norm_type=0, renorm=1, routed_scaling_factor=2.0)
    kw = fake_npu.last("npu_moe_gating_top_k")[2]
    assert kw["renorm"] == 0 and kw["routed_scaling_factor"] == 1.0
    want_w, want_ids = cpu.gating_topk(logits, 4, norm_type=0, renorm=1, routed_scaling_factor=2.0)
    assert torch.equal(ids, want_ids)
    torch.testing.assert_close(w, want_w)


@pytest.mark.contract_only
def test_gating_outside_op_constraints_falls_back(fake_npu):
    backend = api.get_backend("npu")
    w, ids = backend.gating_topk(torch.randn(3, 8), 2, n_group=4, topk_group=2)  # 2 experts per group: op needs > 2
    assert "npu_moe_gating_top_k" not in fake_npu.names() and ids.shape == (3, 2)


@pytest.mark.contract_only
def test_fused_moe_call_sequence_and_layouts(fake_npu):
    backend = moe.use_backend("npu")
    assert backend is npu
    gen = torch.Generator().manual_seed(0)
    x, logits = torch.randn(6, 16, generator=gen), torch.randn(6, 8, generator=gen)
    w13, w2 = torch.randn(8, 12, 16, generator=gen), torch.randn(8, 16, 6, generator=gen)
    y = moe.fused_moe(x, logits, w13, w2, top_k=2)
    assert fake_npu.names() == ["npu_moe_gating_top_k", "npu_moe_init_routing_v2", "npu_grouped_matmul",
                                "npu_swiglu", "npu_grouped_matmul", "npu_moe_token_unpermute"]
    _, (_, ids), kw = fake_npu.last("npu_moe_init_routing_v2")
    assert ids.dtype == torch.int32 and kw["expert_num"] == 8 and kw["active_num"] == 12
    assert kw["expert_tokens_num_type"] == 1 and kw["active_expert_range"] == ()  # range not passed when unused
    gmm1, gmm2 = [c for c in fake_npu.calls if c[0] == "npu_grouped_matmul"]
    assert gmm1[1][1][0].shape == (8, 16, 12) and gmm2[1][1][0].shape == (8, 6, 16)  # [E, K, N] views
    assert gmm1[2]["group_list_type"] == 1 and gmm1[2]["group_list"].sum() == 12
    moe.use_backend("cpu")
    torch.testing.assert_close(y, moe.fused_moe(x, logits, w13, w2, top_k=2))


@pytest.mark.contract_only
def test_unpermute_minus_one_slots_get_zero_weight(fake_npu):
    backend = api.get_backend("npu")
    permuted = torch.randn(4, 3)
    idx = torch.tensor([0, -1, 2, 3], dtype=torch.int32)
    probs = torch.tensor([[0.5, 0.7], [0.2, 0.3]])
    y = backend.token_unpermute(permuted, idx, probs)
    _, (_, sent), kw = fake_npu.last("npu_moe_token_unpermute")
    assert sent.tolist() == [0, 0, 2, 3] and kw["probs"][0].tolist() == [0.5, 0.0]
    torch.testing.assert_close(y, cpu.token_unpermute(permuted, idx, probs))


@pytest.mark.contract_only
def test_init_routing_passes_active_range_and_count_type(fake_npu):
    backend = api.get_backend("npu")
    x, ids = torch.randn(3, 4), torch.tensor([[0, 5], [2, 3], [7, 1]])
    got = backend.init_routing(x, ids, 8, active_expert_range=(2, 6), expert_tokens_num_type=0)
    kw = fake_npu.last("npu_moe_init_routing_v2")[2]
    assert kw["active_expert_range"] == [2, 6] and kw["expert_tokens_num_type"] == 0
    want = cpu.init_routing(x, ids, 8, active_expert_range=(2, 6), expert_tokens_num_type=0)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.contract_only
def test_dynamic_quant_passes_smooth_scales_only_when_given(fake_npu):
    backend = api.get_backend("npu")
    backend.dynamic_quant(torch.randn(2, 8, dtype=torch.bfloat16))
    assert fake_npu.last("npu_dynamic_quant")[2]["smooth_scales"] is None


@pytest.mark.contract_only
def test_npu_dispatch_key_kernel_uses_the_npu_backend(fake_npu):
    """The PrivateUse1 (npu) kernel registered with torch.library routes to backends/npu.py."""
    kernel = library._npu_kernel("gating_topk")
    w, ids = kernel(torch.randn(2, 16), 4)
    assert fake_npu.names() == ["npu_moe_gating_top_k"] and ids.shape == (2, 4)


def test_backend_from_environment(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)
    monkeypatch.setattr(api, "_active", None)
    monkeypatch.setenv("ASCEND_OPS_BACKEND", "auto")
    assert api.get_backend() is cpu  # auto: no torch_npu -> cpu
    monkeypatch.setattr(api, "_active", None)
    monkeypatch.setenv("ASCEND_OPS_BACKEND", "npu")
    with pytest.raises(BackendUnavailable):
        moe.gating_topk(torch.randn(2, 8), 2)
