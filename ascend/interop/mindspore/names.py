"""MindSpore Transformers (Mcore) parameter names <-> Hugging Face names, as data.

A MindSpore Transformers checkpoint (the ``decoder.layers.*`` "Mcore" layout that its training
saves and its ``convert_weight.py --reversed`` reads) differs from the Hugging Face layout in
names and in how some tensors are fused. Every MindSpore tensor is produced from one or more HF
tensors by one declared, exactly invertible transform:

=================  ===============================================================================
``rename``         same tensor, new name.
``interleave``     gate/up of a dense or shared-expert MLP -> ``linear_fc1`` with the rows
                   interleaved ``[g0, u0, g1, u1, ...]`` ("discrete arrangement"):
                   [I, H] + [I, H] -> [2I, H].
``experts_fc1``    every routed expert's ``cat(gate, up)`` [2I, H], transposed and stacked:
                   E x ([I, H], [I, H]) -> ``experts.weight1`` [E*H, 2I] (rows e*H..(e+1)*H-1
                   are expert e, columns ``[gate | up]``).
``experts_fc2``    every routed expert's ``down`` [H, I], transposed and stacked:
                   E x [H, I] -> ``experts.weight2`` [E*I, H].
``qkv``            GQA q/k/v -> ``linear_qkv`` grouped per KV head ``[q x (Hq/Hkv), k, v]``:
                   [Hq*d, ...] + [Hkv*d, ...] + [Hkv*d, ...] -> [(Hq + 2 Hkv)*d, ...]
                   (weights and biases alike).
``alias``          an HF tensor MindSpore does not store because it shares another one (the MTP
                   layer's ``embed_tokens`` / ``shared_head.head`` copies share
                   ``embedding.word_embeddings`` / ``output_layer``); written back as a copy.
                   A copy that differs from the shared tensor (possible in HF checkpoints, e.g.
                   the tiny ones) is kept under its own name (``MsRule.own``, ours:
                   ``mtp.layers.{m}.embedding.word_embeddings.weight`` /
                   ``mtp.layers.{m}.output_layer.weight``) so nothing is lost.
=================  ===============================================================================

Provenance (what is published by MindSpore Transformers and what is ours):

- ``deepseek_v3`` — published: mindformers ``toolkit/weight_convert/deepseekv3/
  convert_deepseekv3_hf_weight.py`` and ``reverse_mcore_deepseekv3_weight_to_hf.py`` (names,
  ``linear_fc1`` interleave, ``experts.weight1/2`` stacking, MTP names, shared embedding/head).
- ``deepseek_v32`` — DeepSeek-V3 names (published) plus the DSA indexer, for which MindSpore
  Transformers publishes no naming. Ours: Megatron-Core's DSA names
  (``self_attention.core_attention.indexer.{linear_wq_b,linear_wk,k_norm,linear_weights_proj}``,
  as used by Megatron-Bridge for DeepSeek-V3.2 and GLM-5.1), which the Mcore layout descends from.
- ``glm_moe_dsa`` (GLM-5) — not published by MindSpore Transformers. Ours: exactly the
  ``deepseek_v32`` rules (same MLA + DSA + MoE + MTP structure).
- ``glm4_moe`` (GLM-4.5/4.6/4.7) — MindSpore Transformers publishes only the inference-time
  HF-name mapping (``mindformers/models/glm4_moe/utils.py``: ``self_attention.linear_q/k/v``,
  ``q_layernorm``/``k_layernorm``, ``linear_proj``, ``router``, ``expert_bias``,
  ``pre_mlp_layernorm``, ``decoder.final_layernorm``, ``output_layer``) and no training
  checkpoint layout. Ours: those names in the Mcore training layout MindSpore Transformers
  publishes for the same GQA + MoE structure (Qwen3-MoE, ``toolkit/weight_convert/qwen3_moe/``):
  fused ``linear_qkv`` (+ ``linear_qkv.bias`` grouped the same way), interleaved ``linear_fc1``,
  stacked experts; MTP names as for DeepSeek-V3.

Nothing here imports torch; ``ascend.interop.mindspore.io`` executes the transforms.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ascend.errors import CheckpointError
from ascend.models.args import ModelArgs

OPS = ("rename", "interleave", "experts_fc1", "experts_fc2", "qkv", "alias")

# Names a MindSpore *training* checkpoint may hold besides model weights (optimizer moments,
# step counters, loss scale). They are skipped, and reported, when reading.
TRAINING_STATE_PATTERNS: tuple[str, ...] = (
    "adam_m.*", "adam_v.*", "exp_avg.*", "exp_avg_sq.*", "accu_grads.*", "moments.*",
    "global_step", "learning_rate", "epoch_num", "step_num", "loss_scale", "scale_sense",
    "current_iterator_step", "last_overflow_iterator_step",
)


# Names of MindSpore Transformers' older, non-Mcore DeepSeek-V3 layout (research/deepseek3,
# up to MindSpore Transformers 1.5: split MLA projections with permuted RoPE rows). Not
# supported; recognised so the error can say so.
LEGACY_MARKERS: tuple[str, ...] = (
    "tok_embeddings.embedding_weight", ".attention.l2q_", ".attention.kv2l", ".attention.lkv2kv",
    ".feed_forward.routed_experts.", "mtp_hidden_fusers.",
)


@dataclass(frozen=True)
class Entry:
    """One template rule of a family table.

    ``when``: condition on the layer (see ``_holds``); ``ms``: MindSpore name relative to the
    scope prefix; ``hf``: HF names relative to the scope prefix, in transform-argument order
    (``{e}`` = routed expert index); ``op``: one of ``OPS``; ``published``: the name comes from
    MindSpore Transformers (False: our consistent extension, see the module docstring).
    """

    when: str
    ms: str
    hf: tuple[str, ...]
    op: str = "rename"
    published: bool = True


@dataclass(frozen=True)
class MsRule:
    """A concrete rule: MindSpore tensor ``ms`` <-> HF tensors ``hf`` through ``op``.

    ``params`` (for ``qkv``): ``num_heads``, ``num_kv_heads``, ``head_dim``. For ``alias`` the
    single ``hf`` name is a copy of the HF tensor that ``ms`` (stored elsewhere) maps to, and
    ``own`` is the MindSpore name the copy is stored under when it is not identical.
    """

    ms: str
    hf: tuple[str, ...]
    op: str
    published: bool = True
    params: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    own: str | None = None


# ---- tables ------------------------------------------------------------------------------
# Scopes: "global" (no prefix); "block" = one decoder layer, prefixes HF ``model.layers.{L}.`` /
# MS ``decoder.layers.{L}.`` for main layers and ``mtp.layers.{m}.transformer_layer.`` for MTP
# layer m (HF layer num_hidden_layers + m); "mtp" = MTP-only tensors, MS ``mtp.layers.{m}.``.

GLOBAL = (
    Entry("always", "embedding.word_embeddings.weight", ("model.embed_tokens.weight",)),
    Entry("always", "decoder.final_layernorm.weight", ("model.norm.weight",)),
    Entry("always", "output_layer.weight", ("lm_head.weight",)),
)

NORMS = (
    Entry("always", "input_layernorm.weight", ("input_layernorm.weight",)),
    Entry("always", "pre_mlp_layernorm.weight", ("post_attention_layernorm.weight",)),
)

MLA = (
    Entry("q_lora", "self_attention.linear_q_down_proj.weight", ("self_attn.q_a_proj.weight",)),
    Entry("q_lora", "self_attention.q_layernorm.weight", ("self_attn.q_a_layernorm.weight",)),
    Entry("q_lora", "self_attention.linear_q_up_proj.weight", ("self_attn.q_b_proj.weight",)),
    # MindSpore Transformers' name for MLA without q-LoRA (DeepSeek-V2-Lite style).
    Entry("no_q_lora", "self_attention.linear_q_proj.weight", ("self_attn.q_proj.weight",)),
    Entry("always", "self_attention.linear_kv_down_proj.weight", ("self_attn.kv_a_proj_with_mqa.weight",)),
    Entry("always", "self_attention.kv_layernorm.weight", ("self_attn.kv_a_layernorm.weight",)),
    Entry("always", "self_attention.linear_kv_up_proj.weight", ("self_attn.kv_b_proj.weight",)),
    Entry("always", "self_attention.linear_proj.weight", ("self_attn.o_proj.weight",)),
)

DSA_INDEXER = tuple(
    Entry("indexer", f"self_attention.core_attention.indexer.{ms}", (f"self_attn.indexer.{hf}",), published=False)
    for ms, hf in (
        ("linear_wq_b.weight", "wq_b.weight"),
        ("linear_wk.weight", "wk.weight"),
        ("k_norm.weight", "k_norm.weight"),
        ("k_norm.bias", "k_norm.bias"),
        ("linear_weights_proj.weight", "weights_proj.weight"),
    )
)

GQA = (
    Entry("always", "self_attention.linear_qkv.weight",
          ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "qkv", published=False),
    Entry("qkv_bias", "self_attention.linear_qkv.bias",
          ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "qkv", published=False),
    Entry("qk_norm", "self_attention.q_layernorm.weight", ("self_attn.q_norm.weight",)),
    Entry("qk_norm", "self_attention.k_layernorm.weight", ("self_attn.k_norm.weight",)),
    Entry("always", "self_attention.linear_proj.weight", ("self_attn.o_proj.weight",)),
)

DENSE_MLP = (
    Entry("dense", "mlp.linear_fc1.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), "interleave"),
    Entry("dense", "mlp.linear_fc2.weight", ("mlp.down_proj.weight",)),
)

MOE = (
    Entry("moe", "mlp.router.weight", ("mlp.gate.weight",)),
    Entry("moe", "mlp.router.expert_bias", ("mlp.gate.e_score_correction_bias",)),
    Entry("shared", "mlp.shared_experts.linear_fc1.weight",
          ("mlp.shared_experts.gate_proj.weight", "mlp.shared_experts.up_proj.weight"), "interleave"),
    Entry("shared", "mlp.shared_experts.linear_fc2.weight", ("mlp.shared_experts.down_proj.weight",)),
    Entry("moe", "mlp.experts.weight1",
          ("mlp.experts.{e}.gate_proj.weight", "mlp.experts.{e}.up_proj.weight"), "experts_fc1"),
    Entry("moe", "mlp.experts.weight2", ("mlp.experts.{e}.down_proj.weight",), "experts_fc2"),
)

MTP = (
    Entry("always", "enorm.weight", ("enorm.weight",)),
    Entry("always", "hnorm.weight", ("hnorm.weight",)),
    Entry("always", "eh_proj.weight", ("eh_proj.weight",)),
    Entry("always", "final_layernorm.weight", ("shared_head.norm.weight",)),
)

# HF copies inside the MTP layer that MindSpore Transformers shares with the main model:
# (HF name relative to the MTP layer, MindSpore name of the shared tensor, our MindSpore name
# relative to ``mtp.layers.{m}.`` for a copy that is not identical).
MTP_SHARED = (
    ("embed_tokens.weight", "embedding.word_embeddings.weight", "embedding.word_embeddings.weight"),
    ("shared_head.head.weight", "output_layer.weight", "output_layer.weight"),
)

_MLA_BLOCK = NORMS + MLA + DENSE_MLP + MOE
FAMILY_BLOCKS: dict[str, tuple[Entry, ...]] = {
    "deepseek_v3": _MLA_BLOCK,
    "deepseek_v32": NORMS + MLA + DSA_INDEXER + DENSE_MLP + MOE,
    "glm_moe_dsa": NORMS + MLA + DSA_INDEXER + DENSE_MLP + MOE,
    "glm4_moe": NORMS + GQA + DENSE_MLP + MOE,
}

# Whether MindSpore Transformers publishes each family's naming (the rest is ours, documented).
PUBLISHED: dict[str, str] = {
    "deepseek_v3": "published (mindformers toolkit/weight_convert/deepseekv3)",
    "deepseek_v32": "DeepSeek-V3 names published; DSA indexer names are ours (Megatron-Core naming)",
    "glm_moe_dsa": "not published by MindSpore Transformers; ours (the deepseek_v32 rules)",
    "glm4_moe": "names published for inference only; fused training layout is ours (as for Qwen3-MoE)",
}


def _holds(when: str, args: ModelArgs, layer: int) -> bool:
    if when == "always":
        return True
    if when == "q_lora":
        return bool(args.q_lora_rank)
    if when == "no_q_lora":
        return not args.q_lora_rank
    if when == "indexer":
        return args.layer_has_indexer(layer)
    if when == "qkv_bias":
        return args.attention_bias
    if when == "qk_norm":
        return args.use_qk_norm
    if when == "dense":
        return not args.is_moe_layer(layer)
    if when == "moe":
        return args.is_moe_layer(layer)
    if when == "shared":
        return args.is_moe_layer(layer) and args.n_shared_experts > 0
    raise ValueError(f"unknown condition {when!r}")


def _block_rules(entries: tuple[Entry, ...], args: ModelArgs, layer: int, hf_prefix: str, ms_prefix: str) -> list[MsRule]:
    rules = []
    qkv = {"num_heads": args.num_attention_heads, "num_kv_heads": args.num_key_value_heads, "head_dim": args.head_dim}
    for entry in entries:
        if not _holds(entry.when, args, layer):
            continue
        if entry.op in ("experts_fc1", "experts_fc2"):
            # Argument order: every source name for expert 0, then expert 1, ...
            hf = tuple(hf_prefix + name.format(e=e) for e in range(args.n_routed_experts) for name in entry.hf)
        else:
            hf = tuple(hf_prefix + name for name in entry.hf)
        rules.append(MsRule(ms_prefix + entry.ms, hf, entry.op, entry.published, qkv if entry.op == "qkv" else {}))
    return rules


def mindspore_rules(args: ModelArgs, *, mtp: bool = True) -> list[MsRule]:
    """Every MindSpore tensor of a checkpoint with architecture ``args``, in file order.

    ``mtp``: include the MTP layers (MindSpore Transformers' ``mtp.layers.{m}``). Raises
    CheckpointError for a family without a table.
    """
    entries = FAMILY_BLOCKS.get(args.family)
    if entries is None:
        raise CheckpointError(
            f"no MindSpore Transformers naming for model family {args.family!r}",
            fix=f"use one of: {', '.join(FAMILY_BLOCKS)}",
        )
    rules = [MsRule(e.ms, e.hf, e.op, e.published) for e in GLOBAL]
    for layer in range(args.num_hidden_layers):
        rules += _block_rules(entries, args, layer, f"model.layers.{layer}.", f"decoder.layers.{layer}.")
    if mtp:
        for m, layer in enumerate(args.mtp_layers):
            hf_prefix = f"model.layers.{layer}."
            rules += [MsRule(f"mtp.layers.{m}.{e.ms}", (hf_prefix + e.hf[0],), "rename") for e in MTP]
            rules += _block_rules(entries, args, layer, hf_prefix, f"mtp.layers.{m}.transformer_layer.")
            if args.mtp_has_copies:
                rules += [MsRule(ms, (hf_prefix + hf,), "alias", own=f"mtp.layers.{m}.{own}") for hf, ms, own in MTP_SHARED]
    return rules


def hf_name_map(rules: list[MsRule]) -> dict[str, MsRule]:
    """``{hf_name: rule}`` over every HF tensor the rules produce or consume."""
    return {name: rule for rule in rules for name in rule.hf}


def ms_name_map(rules: list[MsRule]) -> dict[str, MsRule]:
    """``{ms_name: rule}`` over the stored MindSpore tensors (alias rules excluded)."""
    return {rule.ms: rule for rule in rules if rule.op != "alias"}


def own_copy_rules(rules: list[MsRule]) -> dict[str, MsRule]:
    """``{own ms_name: rename rule}`` for alias copies stored under their own name (optional)."""
    return {r.own: MsRule(r.own, r.hf, "rename", published=False) for r in rules if r.op == "alias" and r.own}


def aliases_of(rules: list[MsRule]) -> dict[str, list[str]]:
    """``{ms_name: [hf copy names]}`` for the MindSpore tensors that also stand for HF copies."""
    out: dict[str, list[str]] = {}
    for rule in rules:
        if rule.op == "alias":
            out.setdefault(rule.ms, []).extend(rule.hf)
    return out


def is_training_state(ms_name: str) -> bool:
    """True for optimizer moments and step counters of a MindSpore training checkpoint."""
    return any(fnmatch.fnmatchcase(ms_name, pattern) for pattern in TRAINING_STATE_PATTERNS)


def is_legacy_name(ms_name: str) -> bool:
    """True for a parameter of the older non-Mcore MindSpore Transformers DeepSeek-V3 layout."""
    return any(marker in ms_name for marker in LEGACY_MARKERS)
