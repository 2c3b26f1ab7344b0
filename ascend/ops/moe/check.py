"""Operator parity: a backend against the plain loop twins, on seeded random inputs.

``ascend ops check --backend npu`` runs this on an Ascend host; it is the command that tells an
engineer whether the NPU kernels match the semantics the CPU backend (and the reference model)
assume. Errors are relative: max |backend - reference| / max(1, max |reference|). Integer outputs
(ids, indices, counts) must match exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ascend.ops.moe import loops
from ascend.ops.moe.api import _fused_moe, get_backend

# Relative tolerance per dtype for float outputs (bf16: a few ulps after two matmuls).
FLOAT_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
SHAPE = dict(tokens=37, experts=32, top_k=4, n_group=4, topk_group=2, hidden=128, inter=64)


@dataclass
class OpResult:
    op: str
    dtype: str
    output: str
    max_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_error <= self.tolerance

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def run_check(backend_name: str, *, seed: int = 0, dtypes=(torch.float32, torch.bfloat16),
              device: str | torch.device | None = None) -> list[OpResult]:
    """Compare every operator of ``backend_name`` with ``reference``; returns one row per output."""
    backend = get_backend(backend_name)
    if device is None:
        device = "npu" if backend.name == "npu" else "cpu"
    results: list[OpResult] = []
    for dtype in dtypes:
        results += _check_dtype(backend, dtype, seed, device)
    return results


def _check_dtype(backend, dtype: torch.dtype, seed: int, device) -> list[OpResult]:
    s = SHAPE
    gen = torch.Generator().manual_seed(seed)
    T, E, K, H, I = s["tokens"], s["experts"], s["top_k"], s["hidden"], s["inter"]
    x = torch.randn(T, H, generator=gen).to(dtype)
    logits = torch.randn(T, E, generator=gen)
    logits[0, 1] = logits[0, 2]  # a tie: the lower id must win
    bias = torch.randn(E, generator=gen) * 0.1
    w13 = (torch.randn(E, 2 * I, H, generator=gen) / H**0.5).to(dtype)
    w2 = (torch.randn(E, H, I, generator=gen) / I**0.5).to(dtype)
    tol = FLOAT_TOLERANCE[dtype]
    name = str(dtype).removeprefix("torch.")

    def on(t):
        return None if t is None else t.to(device)

    def back(t):
        return t.detach().to("cpu")

    rows: list[OpResult] = []

    def add(op, output, got, want, tolerance):
        rows.append(OpResult(op, name, output, _error(back(got), want), tolerance))

    gating_args = dict(bias=bias, n_group=s["n_group"], topk_group=s["topk_group"], routed_scaling_factor=2.5)
    w, ids = backend.gating_topk(on(logits.to(dtype)), K, **{**gating_args, "bias": on(bias)})
    rw, rids = loops.gating_topk(logits.to(dtype), K, **gating_args)
    add("gating_topk", "expert_ids", ids, rids, 0)
    add("gating_topk", "weights", w, rw, tol)

    ex, ri, cnt = backend.init_routing(on(x), on(rids), E, active_expert_range=(4, 28))
    rex, rri, rcnt = loops.init_routing(x, rids, E, active_expert_range=(4, 28))
    valid = int(rcnt.sum())
    add("init_routing", "expanded_x[:valid]", back(ex)[:valid], rex[:valid], 0)
    add("init_routing", "expanded_row_idx", ri, rri, 0)
    add("init_routing", "tokens_per_expert", cnt, rcnt, 0)

    full_ex, full_ri, full_cnt = loops.init_routing(x, rids, E)
    for group_list_type in (1, 0):
        group_list = full_cnt if group_list_type == 1 else full_cnt.cumsum(0)
        w13_t = w13.transpose(1, 2)
        got = backend.grouped_matmul(on(full_ex), on(w13_t), on(group_list), group_list_type)
        add("grouped_matmul", f"y (group_list_type {group_list_type})", got,
            loops.grouped_matmul(full_ex, w13_t, group_list, group_list_type), tol)

    holes = rri.clone()  # -1 slots (experts outside a range) must contribute nothing
    got = backend.token_unpermute(on(rex), on(holes), on(rw.float()))
    add("token_unpermute", "y", got, loops.token_unpermute(rex, holes, rw.float()), tol)

    q, scale = backend.dynamic_quant(on(x))
    rq, rscale = loops.dynamic_quant(x)
    add("dynamic_quant", "int8 (max |diff|)", q.to(torch.int32), rq.to(torch.int32), 0)
    add("dynamic_quant", "scale", scale, rscale, 1e-6)

    got = backend.expert_mlp(on(full_ex), on(full_cnt), on(w13), on(w2), 1)
    add("expert_mlp", "y", got, loops.expert_mlp(full_ex, full_cnt, w13, w2), tol)

    moe_args = dict(top_k=K, bias=bias, n_group=s["n_group"], topk_group=s["topk_group"], routed_scaling_factor=2.5)
    got = _fused_moe(backend, on(x), on(logits), on(w13), on(w2), **{**moe_args, "bias": on(bias)},
                     norm_topk_prob=True, scoring_func="sigmoid")
    add("fused_moe", "y", got, loops.fused_moe(x, logits, w13, w2, **moe_args), tol)
    return rows


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    if got.shape != want.shape:
        return float("inf")
    if not want.is_floating_point():
        return float((got.long() - want.long()).abs().max()) if want.numel() else 0.0
    if want.numel() == 0:
        return 0.0
    diff = (got.double() - want.double()).abs().max()
    return float(diff / max(1.0, float(want.double().abs().max())))
