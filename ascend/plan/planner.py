"""``make_plan``: the parallel layout and the per-device memory budget of a deployment.

A plan is a pure function of (:class:`~ascend.recipe.settings.Settings` from the recipe,
:class:`ModelArgs`, :class:`ChipProfile`). "Fits" means what a paged-KV engine needs to start: on every device,
weights + workspace + HCCL buffers + engine reserve + the KV cache of one ``max_model_len``
sequence (per attention-DP group) within ``capacity × memory_utilization``. This is how xLLM
sizes its cache (``kv = free − capacity · (1 − utilization)``, ``LLMEngine::estimate_kv_cache_capacity``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ascend.errors import CheckFailed, PlanError
from ascend.hardware import ChipProfile, GiB, chip_profile
from ascend.models import ModelArgs, expert_range, vocab_range
from ascend.models.args import ceil_div
from ascend.models.precision import PrecisionPolicy
from ascend.models.sharding import unit_range
from ascend.plan.memory import (
    HcclBuffers,
    HcclBuffsize,
    KVLayout,
    ModelTables,
    Workspace,
    eplb_redundant_experts,
    hccl_buffsize,
    hccl_bytes,
    kv_bytes_per_token,
    rank_weight_bytes,
    workspace_bytes,
)
from ascend.recipe.settings import Settings


@dataclass(frozen=True)
class RankLayout:
    """Where one rank sits and what it holds.

    ``heads``/``kv_heads``/``experts``/``vocab`` are [start, end) ranges.
    """

    rank: int
    node: int
    local_device: int
    dp_rank: int
    attn_tp_rank: int
    heads: tuple[int, int]
    kv_heads: tuple[int, int]
    ep_rank: int
    experts: tuple[int, int]
    moe_tp_rank: int
    vocab: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "node": self.node, "local_device": self.local_device, "dp_rank": self.dp_rank,
            "attn_tp_rank": self.attn_tp_rank, "heads": list(self.heads), "kv_heads": list(self.kv_heads),
            "ep_rank": self.ep_rank, "experts": list(self.experts), "moe_tp_rank": self.moe_tp_rank,
            "vocab": list(self.vocab),
        }


def parallel_layout(args: ModelArgs, settings: Settings) -> list[RankLayout]:
    """Every rank's node, device, DP / TP / EP coordinates, heads, experts and vocab slice."""
    layout = settings.layout
    out = []
    for rank in range(layout.world):
        c = layout.coords(rank)
        node, local = layout.node_of(rank)
        heads = unit_range(args.num_attention_heads, args.num_attention_heads, c.attn_tp_rank, c.attn_tp_size,
                           what="attention heads")
        kv = unit_range(args.num_key_value_heads, args.num_key_value_heads, c.attn_tp_rank, c.attn_tp_size,
                        replicate_units=not args.is_mla, what="KV heads") if not args.is_mla else heads
        experts = expert_range(args.n_routed_experts, c.ep_rank, c.ep_size) if args.n_routed_experts else (0, 0)
        out.append(RankLayout(
            rank=rank, node=node, local_device=local,
            dp_rank=c.dp_rank, attn_tp_rank=c.attn_tp_rank, heads=heads, kv_heads=kv, ep_rank=c.ep_rank,
            experts=experts, moe_tp_rank=c.moe_tp_rank,
            vocab=vocab_range(args.vocab_size, c.attn_tp_rank, c.attn_tp_size),
        ))
    return out


@dataclass
class DeviceClass:
    """Ranks with the same memory budget, and that budget (bytes)."""

    ranks: list[int]
    capacity: int
    budget: int
    weights: dict[str, int]
    workspace: int
    hccl: int
    reserve: int
    kv_per_token: int
    block_size: int

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())

    @property
    def fixed(self) -> int:
        """Everything but the KV cache."""
        return self.weights_total + self.workspace + self.hccl + self.reserve

    @property
    def kv_bytes(self) -> int:
        return max(0, self.budget - self.fixed)

    @property
    def kv_tokens(self) -> int:
        """KV-cache tokens this device can hold, in whole blocks."""
        if self.kv_per_token <= 0:
            return 0
        blocks = self.kv_bytes // (self.kv_per_token * self.block_size)
        return blocks * self.block_size

    def as_dict(self) -> dict[str, Any]:
        return {
            "ranks": self.ranks, "capacity_bytes": self.capacity, "budget_bytes": self.budget,
            "weights_bytes": dict(self.weights), "weights_total_bytes": self.weights_total,
            "workspace_bytes": self.workspace, "hccl_bytes": self.hccl, "reserve_bytes": self.reserve,
            "kv_cache_bytes": self.kv_bytes, "kv_bytes_per_token": self.kv_per_token, "kv_tokens": self.kv_tokens,
        }


@dataclass
class Plan:
    """The outcome: layout, memory per device class, KV capacity and the verdict."""

    model: str
    settings: Settings
    chip: ChipProfile
    layout: list[RankLayout]
    devices: list[DeviceClass]
    kv: KVLayout
    workspace: Workspace
    hccl: HcclBuffers
    hccl_buffsize: HcclBuffsize
    seq_tokens: int  # max_model_len rounded up to whole blocks (+ speculative slots)
    warnings: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def kv_tokens(self) -> int:
        """KV-cache tokens per attention-DP group (the smallest device decides)."""
        return min(d.kv_tokens for d in self.devices)

    @property
    def concurrent_max_len_seqs(self) -> int:
        """max_model_len sequences that can be resident at once, over all DP groups."""
        return self.settings.layout.dp * (self.kv_tokens // self.seq_tokens)

    @property
    def fits(self) -> bool:
        return all(d.fixed <= d.budget for d in self.devices) and self.kv_tokens >= self.seq_tokens

    def as_dict(self) -> dict[str, Any]:
        lay, serve = self.settings.layout, self.settings.serve
        return {
            "model": self.model,
            "fits": self.fits,
            "chip": self.chip.name,
            "world_size": lay.world, "nodes": lay.nodes, "devices_per_node": lay.devices_per_node,
            "dp": lay.dp, "ep": lay.ep, "attention_tp": lay.attn_tp, "moe_tp": lay.moe_tp,
            "max_model_len": serve.max_model_len, "max_seqs": serve.max_seqs,
            "max_tokens_per_batch": serve.max_tokens_per_batch, "memory_utilization": serve.memory_utilization,
            "speculative_tokens": self.settings.speculative_tokens,
            "kv_bytes_per_token": {"attention": self.kv.attention, "indexer": self.kv.indexer,
                                   "total": self.kv.per_token, "layers": self.kv.layers},
            "workspace_bytes": self.workspace.as_dict(),
            "hccl": {"communicators": list(self.hccl.communicators), "buffsize_mb": dict(self.hccl.buffsize_mb),
                     "total_bytes": self.hccl.total, "HCCL_BUFFSIZE": self.hccl_buffsize.mb,
                     "HCCL_BUFFSIZE_source": self.hccl_buffsize.source, "moe_dispatch_need_mb": self.hccl_buffsize.need_mb},
            "kv_tokens_per_dp_group": self.kv_tokens,
            "concurrent_max_len_seqs": self.concurrent_max_len_seqs,
            "device_classes": [d.as_dict() for d in self.devices],
            "layout": [r.as_dict() for r in self.layout],
            "warnings": list(self.warnings),
            "suggestions": list(self.suggestions),
        }


def _check_shape(settings: Settings, chip: ChipProfile) -> None:
    layout = settings.layout.check()
    if chip.devices_per_node is not None and layout.devices_per_node > chip.devices_per_node:
        raise PlanError(
            f"hardware.devices_per_node = {layout.devices_per_node} exceeds the {chip.devices_per_node} ranks of "
            f"one {chip.name} node", fix=f"set hardware.devices_per_node <= {chip.devices_per_node} and add nodes",
        )


def make_plan(settings: Settings, args: ModelArgs | ModelTables, chip: ChipProfile, *, model_name: str = "",
              suggest: bool = True) -> Plan:
    """The layout and memory plan of ``settings`` for ``args`` on ``chip`` (PlanError if impossible).

    ``args`` may be a :class:`ModelTables` to reuse tensor tables across several plans.
    """
    tables = args if isinstance(args, ModelTables) else ModelTables(args)
    args = tables.args
    _check_shape(settings, chip)
    serve = settings.serve
    layout = parallel_layout(args, settings)
    templates = tables.templates(settings)
    kv = kv_bytes_per_token(args, settings)
    ws = workspace_bytes(args, settings)
    hccl = hccl_bytes(settings, args, chip)
    capacity = chip.memory_bytes
    budget = int(capacity * serve.memory_utilization)

    classes: dict[tuple, DeviceClass] = {}
    for r in layout:
        weights = rank_weight_bytes(templates, settings.layout.coords(r.rank),
                                    redundant_experts=eplb_redundant_experts(settings))
        key = tuple(sorted(weights.items()))
        if key in classes:
            classes[key].ranks.append(r.rank)
        else:
            classes[key] = DeviceClass(
                ranks=[r.rank], capacity=capacity, budget=budget, weights=weights, workspace=ws.total,
                hccl=hccl.total, reserve=chip.engine_reserve_bytes, kv_per_token=kv.per_token,
                block_size=serve.block_size,
            )
    seq_tokens = ceil_div(serve.max_model_len + settings.speculative_tokens, serve.block_size) * serve.block_size
    plan = Plan(
        model=model_name or args.family, settings=settings, chip=chip, layout=layout,
        devices=sorted(classes.values(), key=lambda d: d.ranks[0]), kv=kv, workspace=ws, hccl=hccl,
        hccl_buffsize=hccl_buffsize(settings, args),
        seq_tokens=seq_tokens,
    )
    if plan.fits and plan.concurrent_max_len_seqs < serve.max_seqs:
        plan.warnings.append(
            f"only {plan.concurrent_max_len_seqs} sequence(s) of max_model_len {serve.max_model_len} fit in the KV "
            f"cache at once (serve.max_seqs is {serve.max_seqs}); shorter sequences share the "
            f"{plan.kv_tokens} tokens per DP group"
        )
    if suggest and not plan.fits:
        plan.suggestions = suggestions(settings, tables, chip)
    return plan


def _fits(settings: Settings, args: ModelTables, chip: ChipProfile) -> Plan | None:
    try:
        plan = make_plan(settings, args, chip, suggest=False)
    except PlanError:
        return None
    return plan if plan.fits else None


def suggestions(settings: Settings, model: ModelArgs | ModelTables, chip: ChipProfile) -> list[str]:
    """Changes that make a non-fitting plan fit, each computed by re-planning (not guessed)."""
    args = model if isinstance(model, ModelTables) else ModelTables(model)
    layout, serve = settings.layout, settings.serve
    out: list[str] = []
    # 1. shorter context: what the KV cache left after the fixed costs can hold
    base = make_plan(settings, args, chip, suggest=False)
    tokens = base.kv_tokens - settings.speculative_tokens
    if all(d.fixed <= d.budget for d in base.devices) and tokens >= serve.block_size:
        out.append(f"--set serve.max_model_len={tokens} (the KV cache left after weights holds {base.kv_tokens} "
                   f"tokens per DP group)")
    # 2. W8A8 for every quantizable tensor, as the recipe's scheme refines it (A2/A3 compute int8)
    all_int8 = PrecisionPolicy("w8a8", w8a8_scheme=settings.precision.w8a8_scheme)
    if settings.precision != all_int8 and chip.supports("w8a8"):
        plan = _fits(replace(settings, precision=all_int8), args, chip)
        if plan is not None:
            out.append(f"--set convert.precision.default=w8a8 --set convert.precision.rules=[] (all quantizable tensors W8A8): "
                       f"{plan.kv_tokens} KV tokens per DP group")
    # 3. more nodes, keeping dp and spreading experts over all ranks when they were
    for nodes in range(layout.nodes + 1, layout.nodes * 8 + 1):
        world = nodes * layout.devices_per_node
        ep = world if layout.ep == layout.world else layout.ep * nodes // layout.nodes
        experts = args.args.n_routed_experts
        if experts and (ep < 1 or experts % ep):
            ep = max(d for d in range(1, world + 1) if world % d == 0 and experts % d == 0)
        plan = _fits(settings.with_layout(nodes=nodes, ep=ep), args, chip)
        if plan is not None:
            out.append(f"--set hardware.nodes={nodes} --set parallel.ep={ep} ({world} ranks; to deploy, list the nodes "
                       f"in hardware.hosts): {plan.kv_tokens} KV tokens per DP group")
            break
    # 4. no MTP draft model
    if settings.speculative_tokens:
        plan = _fits(settings.with_serve(speculative=None), args, chip)
        if plan is not None:
            out.append(f"--set serve.speculative=null (no MTP draft layer): {plan.kv_tokens} KV tokens per DP group")
    # 5. a larger memory share
    if serve.memory_utilization < 0.95:
        plan = _fits(settings.with_serve(memory_utilization=0.95), args, chip)
        if plan is not None:
            out.append(f"--set serve.memory_utilization=0.95 ({plan.kv_tokens} KV tokens per DP group)")
    return out


def require_fit(plan: Plan) -> None:
    """Raise CheckFailed (exit 3) naming the shortfall and the computed fixes."""
    if plan.fits:
        return
    worst = max(plan.devices, key=lambda d: d.fixed + plan.seq_tokens * d.kv_per_token - d.budget)
    need = worst.fixed + plan.seq_tokens * worst.kv_per_token
    raise CheckFailed(
        f"{plan.model} does not fit on {plan.settings.layout.world} × {plan.chip.name}: a device needs "
        f"{need / GiB:.1f} GiB (weights {worst.weights_total / GiB:.1f}, workspace {worst.workspace / GiB:.1f}, "
        f"HCCL {worst.hccl / GiB:.1f}, reserve {worst.reserve / GiB:.1f}, KV of one {plan.settings.serve.max_model_len}-token "
        f"sequence {plan.seq_tokens * worst.kv_per_token / GiB:.1f}) but has {worst.budget / GiB:.1f} GiB "
        f"({worst.capacity / GiB:.0f} GiB × {plan.settings.serve.memory_utilization})",
        fix=("try " + "; or ".join(plan.suggestions)) if plan.suggestions else
        "no single change found: use more nodes and a smaller precision together",
    )


def plan_recipe(recipe: Any, args: ModelArgs | None = None, chip: ChipProfile | None = None) -> Plan:
    """Plan a loaded ``Recipe``: model facts from ``model_args_for_recipe`` unless given."""
    from ascend.models import model_args_for_recipe

    settings = Settings.from_recipe(recipe)
    if args is None:
        args = model_args_for_recipe(recipe.model)
    if chip is None:
        chip = chip_profile(settings.chip, ranks_per_node=settings.layout.devices_per_node)
    name = recipe.model.id or recipe.name
    return make_plan(settings, args, chip, model_name=name)
