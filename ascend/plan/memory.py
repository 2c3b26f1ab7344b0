"""The per-device memory model: weights by precision, KV cache per token, workspace, buffers.

Every term is a documented formula (docs/planner.md); the inputs are the model's tensor table
(:func:`ascend.models.tensor_specs`), the partitioning (:func:`ascend.models.shard_slice`), the
recipe's precision rules and serving limits, and the chip profile. Pure functions, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from ascend.models import ModelArgs, ShardCoords, TensorSpec, local_shape, tensor_specs
from ascend.models.args import ceil_div

BF16_BYTES = 2
FP8_BLOCK = 128
HCCL_DEFAULT_MB = 200  # HCCL_BUFFSIZE default (ascend-ops.md §1.13)
XLLM_EP_DEFAULT_MB = 512  # xLLM's EP/TP domain buffer when HCCL_BUFFSIZE is unset (mapping_npu.cpp)

# Weight groups shown in the memory table (component -> row).
WEIGHT_ROWS: dict[str, str] = {
    "embed": "embed + head",
    "head": "embed + head",
    "attention": "attention",
    "indexer": "attention",
    "norm": "norms + router",
    "router": "norms + router",
    "dense_mlp": "dense MLP",
    "shared_expert": "shared experts",
    "routed_expert": "routed experts",
    "mtp": "MTP layer",
}


@dataclass(frozen=True)
class PrecisionRule:
    match: str
    format: str


@dataclass(frozen=True)
class PlanInputs:
    """Everything the memory model reads from a recipe (so suggestions can vary it).

    Attributes:
        chip: chip profile name; nodes, devices_per_node: cluster shape (world = product).
        dp, ep: attention data-parallel groups, expert-parallel size.
        precision_default, precision_rules: ``convert.precision`` (first matching glob wins).
        speculative_tokens: MTP speculative tokens (0 = off; on loads the MTP layer).
        max_model_len, max_seqs, max_tokens_per_batch, block_size, memory_utilization: ``serve``.
        hccl_buffsize_mb: ``HCCL_BUFFSIZE`` from ``serve.env`` (None = engine default).
        engine: "xllm" or "cpu".
    """

    chip: str
    nodes: int
    devices_per_node: int
    dp: int = 1
    ep: int = 1
    precision_default: str = "bf16"
    precision_rules: tuple[PrecisionRule, ...] = ()
    speculative_tokens: int = 0
    max_model_len: int = 32768
    max_seqs: int = 32
    max_tokens_per_batch: int = 8192
    block_size: int = 128
    memory_utilization: float = 0.85
    hccl_buffsize_mb: int | None = None
    engine: str = "xllm"

    @property
    def world(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def attn_tp(self) -> int:
        return self.world // self.dp

    @property
    def moe_tp(self) -> int:
        return self.world // self.ep

    @classmethod
    def from_recipe(cls, recipe: Any) -> PlanInputs:
        """Read a ``Recipe`` (pydantic, see ascend.recipe.schema) or anything shaped like it."""
        hw, par, conv, serve = recipe.hardware, recipe.parallel, recipe.convert, recipe.serve
        spec = getattr(serve, "speculative", None)
        buff = (getattr(serve, "env", None) or {}).get("HCCL_BUFFSIZE")
        return cls(
            chip=hw.chip,
            nodes=hw.nodes,
            devices_per_node=hw.devices_per_node,
            dp=par.dp,
            ep=par.ep,
            precision_default=conv.precision.default,
            precision_rules=tuple(PrecisionRule(r.match, r.format) for r in conv.precision.rules),
            speculative_tokens=spec.num_tokens if spec is not None else 0,
            max_model_len=serve.max_model_len,
            max_seqs=serve.max_seqs,
            max_tokens_per_batch=serve.max_tokens_per_batch,
            block_size=serve.block_size,
            memory_utilization=serve.memory_utilization,
            hccl_buffsize_mb=int(buff) if buff is not None and str(buff).strip().isdigit() else None,
            engine=serve.engine,
        )


def tensor_format(spec: TensorSpec, default: str, rules: tuple[PrecisionRule, ...]) -> str:
    """Output format of one tensor: non-quantizable tensors stay BF16; else first rule, else default."""
    if not spec.quantizable:
        return "bf16"
    for rule in rules:
        if fnmatchcase(spec.name, rule.match):
            return rule.format
    return default


def tensor_bytes(shape: tuple[int, ...], fmt: str, native_dtype: str = "bf16") -> int:
    """Bytes of one (local) tensor in ``fmt``.

    bf16: 2 B/element (f32-native tensors such as ``e_score_correction_bias`` stay 4 B);
    fp8: 1 B/element + float32 scale per 128×128 block, ``ceil(r/128)·ceil(c/128)·4``;
    w8a8: 1 B/element + per-output-channel ``weight_scale`` and ``weight_offset`` (bf16, [r, 1]).
    """
    n = 1
    for d in shape:
        n *= d
    if fmt == "fp8" and len(shape) == 2:
        return n + ceil_div(shape[0], FP8_BLOCK) * ceil_div(shape[1], FP8_BLOCK) * 4
    if fmt == "w8a8" and len(shape) == 2:
        return n + shape[0] * 2 * BF16_BYTES
    return n * (4 if native_dtype == "f32" else BF16_BYTES)


@dataclass
class WeightTemplate:
    """Tensors that share name pattern (layer index wildcarded), format and MTP-ness."""

    spec: TensorSpec
    fmt: str
    count: int


_LAYER = re.compile(r"^model\.layers\.\d+\.")


class ModelTables:
    """Tensor specs and weight templates of one model, computed once and reused across re-plans.

    The planner never needs the source's FP8 scales (each output format brings its own), so the
    specs are taken without them.
    """

    def __init__(self, args: ModelArgs):
        self.args = args
        self._specs: dict[bool, list[TensorSpec]] = {}
        self._templates: dict[tuple, list[WeightTemplate]] = {}

    def specs(self, mtp: bool) -> list[TensorSpec]:
        """Specs of the loaded model; with ``mtp`` the MTP layers including embed/head copies."""
        if mtp not in self._specs:
            model = replace(self.args, quantization=None, mtp_has_copies=True if mtp else self.args.mtp_has_copies)
            self._specs[mtp] = tensor_specs(model, mtp=mtp)
        return self._specs[mtp]

    def templates(self, inputs: PlanInputs) -> list[WeightTemplate]:
        """The tensors the engine loads, grouped so each group is partitioned once per rank.

        With speculative decoding the MTP layers are loaded as xLLM's draft model, which carries
        its own embedding and head (copied from the main model when the checkpoint lacks them).
        """
        mtp = inputs.speculative_tokens > 0
        key = (mtp, inputs.precision_default, inputs.precision_rules)
        if key not in self._templates:
            groups: dict[tuple[str, str, bool], WeightTemplate] = {}
            for spec in self.specs(mtp):
                fmt = tensor_format(spec, inputs.precision_default, inputs.precision_rules)
                gkey = (_LAYER.sub("model.layers.*.", spec.name), fmt, spec.mtp)
                hit = groups.get(gkey)
                if hit is None:
                    groups[gkey] = WeightTemplate(spec, fmt, 1)
                else:
                    hit.count += 1
            self._templates[key] = list(groups.values())
        return self._templates[key]


def weight_templates(args: ModelArgs, inputs: PlanInputs) -> list[WeightTemplate]:
    """``ModelTables(args).templates(inputs)`` for one-off use."""
    return ModelTables(args).templates(inputs)


def rank_weight_bytes(templates: list[WeightTemplate], coords: ShardCoords) -> dict[str, int]:
    """Bytes of weights on the rank at ``coords``, per table row (see WEIGHT_ROWS)."""
    out: dict[str, int] = {}
    for t in templates:
        shape = local_shape(t.spec, coords)
        if shape is None:
            continue
        row = "MTP layer" if t.spec.mtp else WEIGHT_ROWS[t.spec.component]
        out[row] = out.get(row, 0) + t.count * tensor_bytes(shape, t.fmt, t.spec.dtype)
    return out


@dataclass(frozen=True)
class KVLayout:
    """KV-cache bytes per token on one device, by part (xLLM ``estimate_kv_cache_capacity``)."""

    attention: int  # MLA latent + rope key, or GQA k and v heads held by this rank
    indexer: int  # DSA indexer key cache
    layers: int  # attention layers with a cache (main + MTP when speculative)

    @property
    def per_token(self) -> int:
        return self.attention + self.indexer


def kv_bytes_per_token(args: ModelArgs, inputs: PlanInputs) -> KVLayout:
    """KV-cache bytes per token per device (BF16 cache).

    MLA: ``(kv_lora_rank + qk_rope_head_dim) · 2`` per layer; every attention-TP rank holds the
    latent cache of its DP group's sequences (it is shared by all heads). DSA indexer:
    ``index_head_dim · 2`` per layer with an indexer. GQA: ``2 · local_kv_heads · head_dim · 2``
    per layer with ``local_kv_heads = max(1, kv_heads / attention_tp)`` (replicated when TP
    exceeds the KV heads). MTP layers add one layer each when speculative decoding is on.
    """
    mtp_layers = args.num_nextn_predict_layers if inputs.speculative_tokens > 0 else 0
    layers = args.num_hidden_layers + mtp_layers
    if args.is_mla:
        per_layer = (args.kv_lora_rank + args.qk_rope_head_dim) * BF16_BYTES
    else:
        local_kv = max(1, args.num_key_value_heads // inputs.attn_tp)
        per_layer = 2 * local_kv * args.head_dim * BF16_BYTES
    indexer_layers = sum(1 for i in range(args.num_hidden_layers) if args.layer_has_indexer(i))
    indexer_layers += mtp_layers if args.has_indexer else 0
    return KVLayout(
        attention=per_layer * layers,
        indexer=args.index_head_dim * BF16_BYTES * indexer_layers,
        layers=layers,
    )


@dataclass(frozen=True)
class Workspace:
    """Activation workspace for one scheduler step of ``max_tokens_per_batch`` tokens (bytes)."""

    hidden: int
    attention: int
    moe: int
    logits: int

    @property
    def total(self) -> int:
        return self.hidden + self.attention + self.moe + self.logits

    def as_dict(self) -> dict[str, int]:
        return {"hidden": self.hidden, "attention": self.attention, "moe": self.moe, "logits": self.logits,
                "total": self.total}


MOE_IMBALANCE = 2  # routed tokens a rank may receive, relative to a perfectly even spread
HIDDEN_BUFFERS = 6  # residual, normed input, attention out, MoE out, two staging buffers


def workspace_bytes(args: ModelArgs, inputs: PlanInputs) -> Workspace:
    """Peak activation memory of one step (T = max_tokens_per_batch per DP group, BF16).

    - hidden: ``T · h · 2 · 6`` (residual, normed input, attention and MoE outputs, 2 staging).
    - attention: ``T · (H / tp) · (2 · qk_head_dim + v_head_dim) · 2`` (q, expanded k, v of
      the local heads during prefill; GQA uses head_dim for all three) plus the DSA indexer
      queries ``T · index_heads · index_head_dim · 2``.
    - moe: routed token copies on this rank ``R = min(2, ep) · T · dp · k / ep`` (2 = imbalance
      allowance; no rank receives more than all ``T · dp · k`` copies), each ``(h + 3 · moe_I / moe_tp) · 2`` bytes (input, gate/up, activation),
      plus the combined output ``T · h · 2``.
    - logits: ``max_seqs · ceil(V / tp) · 4`` (fp32 logits of the sampled rows).
    """
    t, h = inputs.max_tokens_per_batch, args.hidden_size
    tp = inputs.attn_tp
    local_heads = max(1, args.num_attention_heads // tp)
    if args.is_mla:
        per_head = 2 * args.qk_head_dim + args.v_head_dim
    else:
        per_head = 3 * args.head_dim
    attention = t * local_heads * per_head * BF16_BYTES + t * args.index_n_heads * args.index_head_dim * BF16_BYTES
    moe = 0
    if args.n_routed_experts:
        imbalance = min(MOE_IMBALANCE, inputs.ep)
        routed_rows = ceil_div(imbalance * t * inputs.dp * args.num_experts_per_tok, inputs.ep)
        moe = routed_rows * (h + 3 * ceil_div(args.moe_intermediate_size, inputs.moe_tp)) * BF16_BYTES
        moe += t * h * BF16_BYTES
    return Workspace(
        hidden=t * h * BF16_BYTES * HIDDEN_BUFFERS,
        attention=attention,
        moe=moe,
        logits=inputs.max_seqs * ceil_div(args.vocab_size, tp) * 4,
    )


@dataclass(frozen=True)
class HcclBuffers:
    """HCCL communicator buffers on one device: 2 × HCCL_BUFFSIZE (in + out) per communicator."""

    communicators: tuple[str, ...]
    buffsize_mb: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(2 * self.buffsize_mb[c] * 1024 * 1024 for c in self.communicators)


def hccl_bytes(inputs: PlanInputs, collective: str) -> HcclBuffers:
    """Communicators a rank joins (groups larger than one rank) and their buffers.

    attention TP, expert parallel, MoE TP (when it differs from attention TP) and the DP
    group (tokens gathered across DP for the MoE) each hold ``2 · HCCL_BUFFSIZE`` MB.
    ``HCCL_BUFFSIZE`` comes from ``serve.env``; unset, HCCL uses 200 MB and xLLM 512 MB for its
    EP domain. The CPU engine (gloo) has no device buffers.
    """
    if collective != "hccl":
        return HcclBuffers(())
    comms: list[str] = []
    if inputs.attn_tp > 1:
        comms.append("attention TP")
    if inputs.ep > 1:
        comms.append("expert parallel")
    if inputs.moe_tp > 1 and inputs.moe_tp != inputs.attn_tp:
        comms.append("MoE TP")
    if inputs.dp > 1:
        comms.append("data parallel")
    sizes = {}
    for c in comms:
        if inputs.hccl_buffsize_mb is not None:
            sizes[c] = inputs.hccl_buffsize_mb
        elif c == "expert parallel" and inputs.engine == "xllm":
            sizes[c] = XLLM_EP_DEFAULT_MB
        else:
            sizes[c] = HCCL_DEFAULT_MB
    return HcclBuffers(tuple(comms), sizes)
