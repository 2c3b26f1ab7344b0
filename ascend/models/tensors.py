"""Every weight of a checkpoint, as data: name, shape, dtype, how it splits, quantizable or not.

The table ``_RULES`` has one row per weight kind, keyed by the tensor-name template used in the
real Hugging Face checkpoints (``reference/checkpoints.md`` §2–3). A row says which layers carry
it (a predicate on :class:`ModelArgs` and the layer), its shape, its role (``component``), how it
is partitioned and whether it may be quantized. :func:`tensor_specs` walks the table once; a new
family adds rows or predicates, never a loop.

Split kinds (who holds what is decided in :mod:`ascend.models.sharding`):

========== ==========================================================================
column     split dim 0 (output rows) over a TP group, in whole ``units`` (heads, rows)
row        split dim 1 (input columns) over a TP group, in whole ``units``
replicated every rank holds the whole tensor
vocab      split dim 0 over the attention-TP group in ceil(V / tp) chunks
expert     the whole expert is owned by one EP rank, then split column/row (``inner``)
           over the MoE-TP group
========== ==========================================================================

``group`` says which TP group a column/row split uses: ``"attn"`` (attention TP = world / dp)
for attention, dense-MLP, shared-expert and vocab tensors (they work on the tokens of one
attention-DP group, as vLLM / vllm-ascend split shared experts over TP); ``"moe"`` (MoE TP =
world / ep) inside each routed expert.

Quantizable = a 2-D projection in attention, indexer (``wq_b``, ``wk``) or MLP: exactly the
tensors that carry ``weight_scale_inv`` in the published FP8 checkpoints. Never quantized:
embeddings, lm_head and MTP copies, every norm, the router (``mlp.gate``) and its bias, indexer
``weights_proj``, MTP ``eh_proj``, biases (``reference/ascend-ops.md`` §4, checkpoints.md §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ascend.models.args import ModelArgs, ceil_div

COMPONENTS: tuple[str, ...] = (
    "embed", "attention", "indexer", "router", "routed_expert", "shared_expert",
    "dense_mlp", "norm", "head", "mtp",
)
SPLITS: tuple[str, ...] = ("column", "row", "replicated", "vocab", "expert")

_DTYPE_NAMES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "bf16": "bf16", "f32": "f32"}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of the checkpoint.

    Attributes:
        name: exact checkpoint name, e.g. ``model.layers.3.mlp.experts.17.down_proj.weight``.
        shape: full (unsharded) shape.
        dtype: on-disk dtype in this checkpoint: "bf16", "f32", "f8_e4m3" (FP8 weights), ...
        split: "column" | "row" | "replicated" | "vocab" | "expert".
        group: TP group of a column/row split ("attn" or "moe"); None otherwise.
        inner: for experts, "column" or "row" inside the MoE-TP group.
        units: indivisible pieces along the split dim (heads for attention, else the rows or
            columns themselves); TP must divide it.
        replicate_units: when TP exceeds ``units``, ranks share units (GQA k/v heads) instead
            of failing.
        quantizable: may become FP8 / W8A8.
        component: one of COMPONENTS.
        layer: decoder layer index (MTP layers >= num_hidden_layers), None for global tensors.
        expert: routed-expert index, None otherwise.
        n_experts: routed experts per layer (for EP ownership of ``expert`` tensors).
        mtp: belongs to an MTP (next-n) layer.
        scale_of: for FP8 ``weight_scale_inv`` tensors, the weight they scale.
        block: (rows, cols) of the FP8 block (scales only).
        weight_shape: the scaled weight's full shape (scales only).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    split: str
    component: str
    quantizable: bool = False
    group: str | None = None
    inner: str | None = None
    units: int = 1
    replicate_units: bool = False
    layer: int | None = None
    expert: int | None = None
    n_experts: int = 0
    mtp: bool = False
    scale_of: str | None = None
    block: tuple[int, int] | None = None
    weight_shape: tuple[int, ...] | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def split_dim(self) -> int | None:
        """The dim a TP split cuts (0 column / vocab, 1 row), None when not TP-split."""
        kind = self.inner if self.split == "expert" else self.split
        return {"column": 0, "vocab": 0, "row": 1}.get(kind)


# ---- the table ---------------------------------------------------------------------------

Shape = Callable[[ModelArgs], tuple[int, ...]]
When = Callable[[ModelArgs], bool]


@dataclass(frozen=True)
class _Rule:
    template: str  # "{L}" = layer prefix "model.layers.<i>.", "{E}" = expert index
    where: str  # "global" | "layer" | "attn" (every layer) | "indexer" | "dense" | "moe" | "expert" | "mtp"
    shape: Shape
    component: str
    split: str
    group: str | None = None
    inner: str | None = None
    units: Callable[[ModelArgs], int] | None = None
    replicate_units: bool = False
    quantizable: bool = False
    when: When = lambda a: True
    dtype: str | None = None  # fixed on-disk dtype (e.g. "f32"), else the checkpoint dtype


def _mla(a: ModelArgs) -> bool:
    return a.is_mla


def _gqa(a: ModelArgs) -> bool:
    return not a.is_mla


def _heads(a: ModelArgs) -> int:
    return a.num_attention_heads


def _kv_heads(a: ModelArgs) -> int:
    return a.num_key_value_heads


_RULES: tuple[_Rule, ...] = (
    # global
    _Rule("model.embed_tokens.weight", "global", lambda a: (a.vocab_size, a.hidden_size), "embed", "vocab"),
    _Rule("model.norm.weight", "global", lambda a: (a.hidden_size,), "norm", "replicated"),
    _Rule("lm_head.weight", "global", lambda a: (a.vocab_size, a.hidden_size), "head", "vocab",
          when=lambda a: not a.tie_word_embeddings),
    # every decoder layer
    _Rule("{L}input_layernorm.weight", "layer", lambda a: (a.hidden_size,), "norm", "replicated"),
    _Rule("{L}post_attention_layernorm.weight", "layer", lambda a: (a.hidden_size,), "norm", "replicated"),
    # MLA attention (q rows and kv_b rows are head-major, so a contiguous split = whole heads)
    _Rule("{L}self_attn.q_a_proj.weight", "layer", lambda a: (a.q_lora_rank, a.hidden_size), "attention",
          "replicated", quantizable=True, when=lambda a: a.is_mla and a.q_lora_rank is not None),
    _Rule("{L}self_attn.q_a_proj.bias", "layer", lambda a: (a.q_lora_rank,), "attention", "replicated",
          when=lambda a: a.is_mla and a.q_lora_rank is not None and a.attention_bias),
    _Rule("{L}self_attn.q_a_layernorm.weight", "layer", lambda a: (a.q_lora_rank,), "norm", "replicated",
          when=lambda a: a.is_mla and a.q_lora_rank is not None),
    _Rule("{L}self_attn.q_b_proj.weight", "layer", lambda a: (a.num_attention_heads * a.qk_head_dim, a.q_lora_rank),
          "attention", "column", group="attn", units=_heads, quantizable=True,
          when=lambda a: a.is_mla and a.q_lora_rank is not None),
    _Rule("{L}self_attn.q_proj.weight", "layer", lambda a: (a.num_attention_heads * a.qk_head_dim, a.hidden_size),
          "attention", "column", group="attn", units=_heads, quantizable=True,
          when=lambda a: a.is_mla and a.q_lora_rank is None),
    _Rule("{L}self_attn.kv_a_proj_with_mqa.weight", "layer",
          lambda a: (a.kv_lora_rank + a.qk_rope_head_dim, a.hidden_size), "attention", "replicated",
          quantizable=True, when=_mla),
    _Rule("{L}self_attn.kv_a_proj_with_mqa.bias", "layer", lambda a: (a.kv_lora_rank + a.qk_rope_head_dim,),
          "attention", "replicated", when=lambda a: a.is_mla and a.attention_bias),
    _Rule("{L}self_attn.kv_a_layernorm.weight", "layer", lambda a: (a.kv_lora_rank,), "norm", "replicated", when=_mla),
    _Rule("{L}self_attn.kv_b_proj.weight", "layer",
          lambda a: (a.num_attention_heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank),
          "attention", "column", group="attn", units=_heads, quantizable=True, when=_mla),
    _Rule("{L}self_attn.o_proj.weight", "layer", lambda a: (a.hidden_size, a.num_attention_heads * a.v_head_dim),
          "attention", "row", group="attn", units=_heads, quantizable=True, when=_mla),
    _Rule("{L}self_attn.o_proj.bias", "layer", lambda a: (a.hidden_size,), "attention", "replicated",
          when=lambda a: a.is_mla and a.attention_bias),
    # DSA lightning indexer: small, replicated on every rank (checkpoints.md §6.1)
    _Rule("{L}self_attn.indexer.wq_b.weight", "indexer", lambda a: (a.index_n_heads * a.index_head_dim, a.q_lora_rank),
          "indexer", "replicated", quantizable=True),
    _Rule("{L}self_attn.indexer.wk.weight", "indexer", lambda a: (a.index_head_dim, a.hidden_size), "indexer",
          "replicated", quantizable=True),
    _Rule("{L}self_attn.indexer.k_norm.weight", "indexer", lambda a: (a.index_head_dim,), "norm", "replicated"),
    _Rule("{L}self_attn.indexer.k_norm.bias", "indexer", lambda a: (a.index_head_dim,), "norm", "replicated"),
    _Rule("{L}self_attn.indexer.weights_proj.weight", "indexer", lambda a: (a.index_n_heads, a.hidden_size),
          "indexer", "replicated"),
    # GQA attention (glm4_moe): q by heads; k/v by KV heads, replicated when TP > KV heads
    _Rule("{L}self_attn.q_proj.weight", "layer", lambda a: (a.num_attention_heads * a.head_dim, a.hidden_size),
          "attention", "column", group="attn", units=_heads, quantizable=True, when=_gqa),
    _Rule("{L}self_attn.q_proj.bias", "layer", lambda a: (a.num_attention_heads * a.head_dim,), "attention", "column",
          group="attn", units=_heads, when=lambda a: not a.is_mla and a.attention_bias),
    *(
        rule
        for proj in ("k_proj", "v_proj")
        for rule in (
            _Rule(f"{{L}}self_attn.{proj}.weight", "layer", lambda a: (a.num_key_value_heads * a.head_dim, a.hidden_size),
                  "attention", "column", group="attn", units=_kv_heads, replicate_units=True, quantizable=True,
                  when=_gqa),
            _Rule(f"{{L}}self_attn.{proj}.bias", "layer", lambda a: (a.num_key_value_heads * a.head_dim,), "attention",
                  "column", group="attn", units=_kv_heads, replicate_units=True,
                  when=lambda a: not a.is_mla and a.attention_bias),
        )
    ),
    _Rule("{L}self_attn.o_proj.weight", "layer", lambda a: (a.hidden_size, a.num_attention_heads * a.head_dim),
          "attention", "row", group="attn", units=_heads, quantizable=True, when=_gqa),
    _Rule("{L}self_attn.q_norm.weight", "layer", lambda a: (a.head_dim,), "norm", "replicated",
          when=lambda a: not a.is_mla and a.use_qk_norm),
    _Rule("{L}self_attn.k_norm.weight", "layer", lambda a: (a.head_dim,), "norm", "replicated",
          when=lambda a: not a.is_mla and a.use_qk_norm),
    # dense MLP (first_k_dense_replace layers) and shared experts: TP over the attention group
    _Rule("{L}mlp.gate_proj.weight", "dense", lambda a: (a.intermediate_size, a.hidden_size), "dense_mlp", "column",
          group="attn", quantizable=True),
    _Rule("{L}mlp.up_proj.weight", "dense", lambda a: (a.intermediate_size, a.hidden_size), "dense_mlp", "column",
          group="attn", quantizable=True),
    _Rule("{L}mlp.down_proj.weight", "dense", lambda a: (a.hidden_size, a.intermediate_size), "dense_mlp", "row",
          group="attn", quantizable=True),
    # MoE block
    _Rule("{L}mlp.gate.weight", "moe", lambda a: (a.n_routed_experts, a.hidden_size), "router", "replicated"),
    _Rule("{L}mlp.gate.e_score_correction_bias", "moe", lambda a: (a.n_routed_experts,), "router", "replicated",
          dtype="f32"),
    _Rule("{L}mlp.shared_experts.gate_proj.weight", "moe",
          lambda a: (a.moe_intermediate_size * a.n_shared_experts, a.hidden_size), "shared_expert", "column",
          group="attn", quantizable=True, when=lambda a: a.n_shared_experts > 0),
    _Rule("{L}mlp.shared_experts.up_proj.weight", "moe",
          lambda a: (a.moe_intermediate_size * a.n_shared_experts, a.hidden_size), "shared_expert", "column",
          group="attn", quantizable=True, when=lambda a: a.n_shared_experts > 0),
    _Rule("{L}mlp.shared_experts.down_proj.weight", "moe",
          lambda a: (a.hidden_size, a.moe_intermediate_size * a.n_shared_experts), "shared_expert", "row",
          group="attn", quantizable=True, when=lambda a: a.n_shared_experts > 0),
    _Rule("{L}mlp.experts.{E}.gate_proj.weight", "expert", lambda a: (a.moe_intermediate_size, a.hidden_size),
          "routed_expert", "expert", group="moe", inner="column", quantizable=True),
    _Rule("{L}mlp.experts.{E}.up_proj.weight", "expert", lambda a: (a.moe_intermediate_size, a.hidden_size),
          "routed_expert", "expert", group="moe", inner="column", quantizable=True),
    _Rule("{L}mlp.experts.{E}.down_proj.weight", "expert", lambda a: (a.hidden_size, a.moe_intermediate_size),
          "routed_expert", "expert", group="moe", inner="row", quantizable=True),
    # MTP glue around the MTP decoder layer (checkpoints.md §3)
    _Rule("{L}enorm.weight", "mtp", lambda a: (a.hidden_size,), "mtp", "replicated"),
    _Rule("{L}hnorm.weight", "mtp", lambda a: (a.hidden_size,), "mtp", "replicated"),
    _Rule("{L}eh_proj.weight", "mtp", lambda a: (a.hidden_size, 2 * a.hidden_size), "mtp", "replicated"),
    _Rule("{L}shared_head.norm.weight", "mtp", lambda a: (a.hidden_size,), "mtp", "replicated"),
    _Rule("{L}embed_tokens.weight", "mtp", lambda a: (a.vocab_size, a.hidden_size), "embed", "vocab",
          when=lambda a: a.mtp_has_copies),
    _Rule("{L}shared_head.head.weight", "mtp", lambda a: (a.vocab_size, a.hidden_size), "head", "vocab",
          when=lambda a: a.mtp_has_copies),
)


def _applies(rule: _Rule, args: ModelArgs, layer: int | None) -> bool:
    """Whether ``rule`` names a tensor on ``layer`` (None = global tensors)."""
    if not rule.when(args):
        return False
    if rule.where == "global":
        return layer is None
    if layer is None:
        return False
    is_mtp = layer >= args.num_hidden_layers
    return {
        "layer": True,
        "indexer": args.layer_has_indexer(layer),
        "dense": not args.is_moe_layer(layer),
        "moe": args.is_moe_layer(layer),
        "expert": args.is_moe_layer(layer),
        "mtp": is_mtp,
    }[rule.where]


def _checkpoint_dtype(args: ModelArgs) -> str:
    return _DTYPE_NAMES.get(args.dtype, args.dtype)


def tensor_specs(args: ModelArgs, mtp: bool = True) -> list[TensorSpec]:
    """Every tensor of the checkpoint ``args`` describes, in a stable order.

    ``mtp=False`` leaves out the MTP layers (what transformers loads). When the checkpoint is
    block-FP8 (``args.fp8_block``) each quantizable weight is listed as ``f8_e4m3`` and is
    followed by its ``weight_scale_inv`` (float32, ``[ceil(out/b0), ceil(in/b1)]``), split like
    the weight in block units.
    """
    base_dtype = _checkpoint_dtype(args)
    block = args.fp8_block
    layers: list[int | None] = [None, *range(args.num_hidden_layers)]
    if mtp:
        layers += args.mtp_layers
    specs: list[TensorSpec] = []
    for layer in layers:
        prefix = f"model.layers.{layer}." if layer is not None else ""
        for rule in _RULES:
            if not _applies(rule, args, layer):
                continue
            experts = range(args.n_routed_experts) if rule.where == "expert" else [None]
            shape = tuple(int(d) for d in rule.shape(args))
            fp8 = block is not None and rule.quantizable
            template = rule.template.replace("{L}", prefix)
            common = dict(
                shape=shape,
                dtype="f8_e4m3" if fp8 else (rule.dtype or base_dtype),
                split=rule.split,
                component=rule.component,
                quantizable=rule.quantizable,
                group=rule.group if rule.split in ("column", "row", "expert") else ("attn" if rule.split == "vocab" else None),
                inner=rule.inner,
                units=rule.units(args) if rule.units else _default_units(rule, shape),
                replicate_units=rule.replicate_units,
                layer=layer,
                mtp=layer is not None and layer >= args.num_hidden_layers,
            )
            for expert in experts:
                name = template if expert is None else template.replace("{E}", str(expert))
                spec = TensorSpec(name=name, expert=expert, n_experts=args.n_routed_experts if expert is not None else 0,
                                  **common)
                specs.append(spec)
                if fp8:
                    specs.append(scale_spec(spec, block))
    return specs


def _default_units(rule: _Rule, shape: tuple[int, ...]) -> int:
    kind = rule.inner if rule.split == "expert" else rule.split
    dim = {"column": 0, "vocab": 0, "row": 1}.get(kind)
    return shape[dim] if dim is not None else 1


def scale_spec(weight: TensorSpec, block: tuple[int, int]) -> TensorSpec:
    """The FP8 ``weight_scale_inv`` partner of ``weight`` (float32, one value per block)."""
    rows, cols = weight.shape
    return TensorSpec(
        name=weight.name + "_scale_inv",
        shape=(ceil_div(rows, block[0]), ceil_div(cols, block[1])),
        dtype="f32",
        split=weight.split,
        component=weight.component,
        quantizable=False,
        group=weight.group,
        inner=weight.inner,
        units=weight.units,
        replicate_units=weight.replicate_units,
        layer=weight.layer,
        expert=weight.expert,
        n_experts=weight.n_experts,
        mtp=weight.mtp,
        scale_of=weight.name,
        block=block,
        weight_shape=weight.shape,
    )


def spec_index(specs: list[TensorSpec]) -> dict[str, TensorSpec]:
    """Name -> spec lookup."""
    return {s.name: s for s in specs}


def find_spec(args: ModelArgs, name: str) -> TensorSpec:
    """The spec of one tensor by checkpoint name (KeyError with the name when unknown)."""
    for spec in tensor_specs(args, mtp=True):
        if spec.name == name:
            return spec
    raise KeyError(f"{name} is not a tensor of this {args.family} checkpoint")


# ---- parameter counts --------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts computed from :func:`tensor_specs` (FP8 scales excluded).

    Attributes:
        total: main model (MTP excluded), as published figures count it.
        active: parameters used per token: total minus the routed experts not selected
            (each MoE layer runs ``num_experts_per_tok`` of ``n_routed_experts``).
        mtp: the MTP layers (with their embed/head copies if stored).
        by_component: main-model parameters per component.
        mtp_by_component: MTP-layer parameters per component.
    """

    total: int
    active: int
    mtp: int
    by_component: dict[str, int]
    mtp_by_component: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total, "active": self.active, "mtp": self.mtp,
            "by_component": dict(self.by_component), "mtp_by_component": dict(self.mtp_by_component),
        }


def param_counts(args: ModelArgs) -> ParamCounts:
    """Total / active / per-component parameter counts, summed from the tensor table."""
    main = {c: 0 for c in COMPONENTS}
    mtp = {c: 0 for c in COMPONENTS}
    for spec in tensor_specs(args, mtp=True):
        if spec.scale_of is not None:
            continue
        (mtp if spec.mtp else main)[spec.component] += spec.numel
    total = sum(main.values())
    unused = 0
    if args.n_routed_experts:
        unused = main["routed_expert"] * (args.n_routed_experts - args.num_experts_per_tok) // args.n_routed_experts
    return ParamCounts(
        total=total,
        active=total - unused,
        mtp=sum(mtp.values()),
        by_component={k: v for k, v in main.items() if v},
        mtp_by_component={k: v for k, v in mtp.items() if v},
    )
