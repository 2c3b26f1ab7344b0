"""The per-device memory model: weights by precision, KV cache per token, workspace, buffers.

Every term is a documented formula (docs/planner.md); the inputs are the model's tensor table
(:func:`ascend.models.tensor_specs`), the partitioning (:func:`ascend.models.shard_slice`), the
recipe's precision rules and serving limits, and the chip profile. Pure functions, no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from ascend.hardware import ChipProfile
from ascend.models import ModelArgs, ShardCoords, TensorSpec, local_shape, tensor_specs
from ascend.models.args import ceil_div
from ascend.models.precision import FOLDED_BIAS, W8A8_STATIC, written_specs
from ascend.recipe.settings import Settings

BF16_BYTES = 2
F32_BYTES = 4
FP8_BLOCK = 128
HCCL_DEFAULT_MB = 200  # HCCL_BUFFSIZE default (ascend-ops.md §1.13)
XLLM_EP_DEFAULT_MB = 512  # xLLM's EP and TP domain buffers when HCCL_BUFFSIZE is unset (mapping_npu.cpp)

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


def tensor_bytes(shape: tuple[int, ...], fmt: str, native_dtype: str = "bf16") -> int:
    """Bytes of one (local) tensor written in ``fmt`` (``PrecisionPolicy.written_format``), as
    the converter writes it (reference/quantization.md §1-2):

    bf16: 2 B/element (f32-native tensors such as ``e_score_correction_bias`` stay 4 B);
    fp8: 1 B/element + float32 scale per 128×128 block, ``ceil(r/128)·ceil(c/128)·4``;
    w8a8 (W8A8_DYNAMIC): 1 B/element + float32 ``weight_scale`` and ``weight_offset`` [r, 1];
    w8a8_static: 1 B/element + int32 ``quant_bias`` and float32 ``deq_scale`` [r] + float32
    ``input_scale`` and ``input_offset`` [1]; f32_folded (a static linear's bias): 4 B/element.
    """
    n = 1
    for d in shape:
        n *= d
    if len(shape) == 2:
        if fmt == "fp8":
            return n + ceil_div(shape[0], FP8_BLOCK) * ceil_div(shape[1], FP8_BLOCK) * 4
        if fmt == "w8a8":
            return n + shape[0] * 2 * F32_BYTES
        if fmt == W8A8_STATIC:
            return n + shape[0] * 2 * F32_BYTES + 2 * F32_BYTES
    return n * (F32_BYTES if native_dtype == "f32" or fmt == FOLDED_BIAS else BF16_BYTES)


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

    def templates(self, settings: Settings) -> list[WeightTemplate]:
        """The tensors the engine loads, grouped so each group is partitioned once per rank.

        With speculative decoding the MTP layers are loaded as xLLM's draft model, which carries
        its own embedding and head (copied from the main model when the checkpoint lacks them).
        """
        mtp = settings.speculative_tokens > 0
        key = (mtp, settings.precision)
        if key not in self._templates:
            groups: dict[tuple[str, str, bool], WeightTemplate] = {}
            for spec, fmt in written_specs(self.args, settings.precision, self.specs(mtp)):
                gkey = (_LAYER.sub("model.layers.*.", spec.name), fmt, spec.mtp)
                hit = groups.get(gkey)
                if hit is None:
                    groups[gkey] = WeightTemplate(spec, fmt, 1)
                else:
                    hit.count += 1
            self._templates[key] = list(groups.values())
        return self._templates[key]


def weight_templates(args: ModelArgs, settings: Settings) -> list[WeightTemplate]:
    """``ModelTables(args).templates(settings)`` for one-off use."""
    return ModelTables(args).templates(settings)


def rank_weight_bytes(templates: list[WeightTemplate], coords: ShardCoords, *, redundant_experts: int = 0) -> dict[str, int]:
    """Bytes of weights on the rank at ``coords``, per table row (see WEIGHT_ROWS).

    ``redundant_experts`` (EPLB, xLLM ``--redundant_experts_num``): every device holds that many
    extra routed experts in each MoE layer of the main model, in the experts' output format and
    this rank's shard of an expert — the row "redundant experts" (see :func:`eplb_redundant_experts`).
    """
    out: dict[str, int] = {}
    local_experts: dict[int, int] = {}  # expert id -> its bytes over all MoE layers on this rank
    for t in templates:
        shape = local_shape(t.spec, coords)
        if shape is None:
            continue
        row = "MTP layer" if t.spec.mtp else WEIGHT_ROWS[t.spec.component]
        size = t.count * tensor_bytes(shape, t.fmt, t.spec.dtype)
        out[row] = out.get(row, 0) + size
        if row == "routed experts":
            local_experts[t.spec.expert] = local_experts.get(t.spec.expert, 0) + size
    if redundant_experts and local_experts:
        out["redundant experts"] = redundant_experts * max(local_experts.values())
    return out


def eplb_redundant_experts(settings: Settings) -> int:
    """Extra routed experts per device and MoE layer: ``serve.eplb.redundant_experts`` with EPLB on, else 0."""
    eplb = settings.serve.eplb
    return eplb.redundant_experts if eplb.enable else 0


@dataclass(frozen=True)
class KVLayout:
    """KV-cache bytes per token on one device, by part (xLLM ``estimate_kv_cache_capacity``)."""

    attention: int  # MLA latent + rope key, or GQA k and v heads held by this rank
    indexer: int  # DSA indexer key cache
    layers: int  # attention layers with a cache (main + MTP when speculative)

    @property
    def per_token(self) -> int:
        return self.attention + self.indexer


def kv_bytes_per_token(args: ModelArgs, settings: Settings) -> KVLayout:
    """KV-cache bytes per token per device (BF16 cache).

    MLA: ``(kv_lora_rank + qk_rope_head_dim) · 2`` per layer; every attention-TP rank holds the
    latent cache of its DP group's sequences (it is shared by all heads). DSA indexer:
    ``index_head_dim · 2`` per layer with an indexer. GQA: ``2 · local_kv_heads · head_dim · 2``
    per layer with ``local_kv_heads = max(1, kv_heads / attention_tp)`` (replicated when TP
    exceeds the KV heads). MTP layers add one layer each when speculative decoding is on.
    """
    mtp_layers = args.num_nextn_predict_layers if settings.speculative_tokens > 0 else 0
    layers = args.num_hidden_layers + mtp_layers
    if args.is_mla:
        per_layer = (args.kv_lora_rank + args.qk_rope_head_dim) * BF16_BYTES
    else:
        local_kv = max(1, args.num_key_value_heads // settings.layout.attn_tp)
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


def workspace_bytes(args: ModelArgs, settings: Settings) -> Workspace:
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
    layout, t, h = settings.layout, settings.serve.max_tokens_per_batch, args.hidden_size
    tp = layout.attn_tp
    local_heads = max(1, args.num_attention_heads // tp)
    if args.is_mla:
        per_head = 2 * args.qk_head_dim + args.v_head_dim
    else:
        per_head = 3 * args.head_dim
    attention = t * local_heads * per_head * BF16_BYTES + t * args.index_n_heads * args.index_head_dim * BF16_BYTES
    moe = 0
    if args.n_routed_experts:
        imbalance = min(MOE_IMBALANCE, layout.ep)
        routed_rows = ceil_div(imbalance * t * layout.dp * args.num_experts_per_tok, layout.ep)
        moe = routed_rows * (h + 3 * ceil_div(args.moe_intermediate_size, layout.moe_tp)) * BF16_BYTES
        moe += t * h * BF16_BYTES
    return Workspace(
        hidden=t * h * BF16_BYTES * HIDDEN_BUFFERS,
        attention=attention,
        moe=moe,
        logits=settings.serve.max_seqs * ceil_div(args.vocab_size, tp) * 4,
    )


@dataclass(frozen=True)
class HcclBuffers:
    """HCCL communicator buffers on one device: 2 × HCCL_BUFFSIZE (in + out) per communicator."""

    communicators: tuple[str, ...]
    buffsize_mb: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(2 * self.buffsize_mb[c] * 1024 * 1024 for c in self.communicators)


def moe_dispatch_buffer_mb(chip: str, args: ModelArgs, ep: int, max_bs: int) -> int:
    """MB of HCCL buffer MoE dispatch/combine needs (reference/ascend-ops.md §1.13).

    A3 (fullmesh_v1): 2·(L·bs·EP·Align512(Align32(2H)+64) + (K+shared)·bs·Align512(2H)) bytes;
    A2 (fullmesh): 2·(bs·EP·min(L, K)·H·2 B + 2 MB), with L = experts per rank, bs = tokens per
    rank per step.
    """
    def align(x: int, a: int) -> int:
        return (x + a - 1) // a * a

    hidden, top_k = args.hidden_size, args.num_experts_per_tok
    local = max(1, args.n_routed_experts // ep)
    if chip == "ascend-a3":
        need = 2 * (local * max_bs * ep * align(align(2 * hidden, 32) + 64, 512)
                    + (top_k + args.n_shared_experts) * max_bs * align(2 * hidden, 512))
    else:
        need = 2 * (max_bs * ep * min(local, top_k) * hidden * 2 + 2 * 2**20)
    return math.ceil(need / 2**20)


@dataclass(frozen=True)
class HcclBuffsize:
    """The ``HCCL_BUFFSIZE`` a deployment runs with: what ``ascend serve`` exports and the plan counts.

    ``mb`` None: unset (HCCL's 200 MB; xLLM's own 512 MB on its TP and EP domains).
    ``need_mb``: what MoE dispatch needs at ``serve.max_seqs`` (0 without EP or routed experts).
    """

    mb: int | None
    need_mb: int
    source: str  # "serve.env" | "computed" | "default"


def hccl_buffsize(settings: Settings, args: ModelArgs) -> HcclBuffsize:
    """One figure for planner and launcher: ``serve.env.HCCL_BUFFSIZE`` when the user gives it;
    else, for xLLM with EP > 1, the MoE dispatch need (+10 %, in 8 MB steps) when it exceeds
    xLLM's 512 MB default; else unset."""
    serve, layout = settings.serve, settings.layout
    need = 0
    if serve.engine == "xllm" and layout.ep > 1 and args.n_routed_experts:
        max_bs = serve.max_seqs * (settings.speculative_tokens + 1)
        need = moe_dispatch_buffer_mb(settings.chip, args, layout.ep, max_bs)
    given = str(serve.env.get("HCCL_BUFFSIZE", "")).strip()
    if given.isdigit():
        return HcclBuffsize(int(given), need, "serve.env")
    if need > XLLM_EP_DEFAULT_MB:
        return HcclBuffsize(math.ceil(need * 1.1 / 8) * 8, need, "computed")
    return HcclBuffsize(None, need, "default")


def hccl_bytes(settings: Settings, args: ModelArgs, chip: ChipProfile) -> HcclBuffers:
    """Communicators a rank joins (groups larger than one rank) and their buffers.

    attention TP, expert parallel, MoE TP (when it differs from attention TP) and the DP
    group (tokens gathered across DP for the MoE) each hold ``2 · HCCL_BUFFSIZE`` MB, with the
    ``HCCL_BUFFSIZE`` of :func:`hccl_buffsize`. Unset, xLLM sizes its TP and EP domains at
    512 MB and HCCL the others at 200 MB (xllm ``mapping_npu.cpp``). The CPU engine (gloo) has
    no device buffers.
    """
    if chip.collective != "hccl":
        return HcclBuffers(())
    layout = settings.layout
    comms: list[str] = []
    if layout.attn_tp > 1:
        comms.append("attention TP")
    if layout.ep > 1:
        comms.append("expert parallel")
    if layout.moe_tp > 1 and layout.moe_tp != layout.attn_tp:
        comms.append("MoE TP")
    if layout.dp > 1:
        comms.append("data parallel")
    buff = hccl_buffsize(settings, args).mb
    xllm_domains = ("attention TP", "expert parallel") if settings.serve.engine == "xllm" else ()
    sizes = {c: buff if buff is not None else XLLM_EP_DEFAULT_MB if c in xllm_domains else HCCL_DEFAULT_MB
             for c in comms}
    return HcclBuffers(tuple(comms), sizes)
