"""The scripted checkpoint's weights: tensors that implement a ``Design`` through attention,
the DSA indexer, the router, the routed experts and the shared expert (see
``ascend.tiny.scripted`` for the construction)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from ascend.tiny.scripted_design import (
    ATTN_O,
    ATTN_QK,
    CAT_DOWN,
    CATEGORIES,
    CONDITIONS,
    DEFAULT_LOGIT,
    FAMILY,
    FLAGS,
    GATE,
    HEAD,
    OUT_DOWN,
    PRIORITY,
    ROUTER,
    SHARED_DOWN,
    Design,
    ScriptError,
)

# ------------------------------------------------------------------------------------ weights


@dataclass
class Layout:
    """Residual coordinates (see the module docstring)."""

    hidden: int
    tok: dict[int, int]
    out: dict[int, int]
    const: int = 0
    other: int = 1

    @staticmethod
    def on(f: str) -> int:
        return 2 + 2 * FLAGS.index(f)

    @staticmethod
    def off(f: str) -> int:
        return 3 + 2 * FLAGS.index(f)

    @staticmethod
    def cat(c: str) -> int:
        return 2 + 2 * len(FLAGS) + CATEGORIES.index(c)

    @classmethod
    def for_design(cls, d: Design, hidden: int) -> "Layout":
        first = 2 + 2 * len(FLAGS) + len(CATEGORIES)
        ins, outs = d.inputs(), d.outputs()
        need = first + len(ins) + len(outs)
        if need > hidden:
            raise ScriptError(f"the script needs {need} residual coordinates, hidden_size is {hidden}")
        tok = {t: first + i for i, t in enumerate(ins)}
        out = {t: first + len(ins) + i for i, t in enumerate(outs)}
        return cls(hidden, tok, out)


def scripted_tensors(args: Any, d: Design) -> dict[str, torch.Tensor]:
    """The designed float32 tensors by name (everything not listed is zero, norms one).

    ``args``: ``ascend.models.ModelArgs`` of a glm_moe_dsa checkpoint with >= 2 layers, a dense
    layer 0 and MoE layer 1, >= 4 attention heads, >= 1 shared expert.
    """
    a = args
    if a.family != FAMILY or not a.has_indexer:
        raise ScriptError(f"scripted checkpoints are built for {FAMILY}, not {a.family}")
    if a.num_hidden_layers < 2 or a.is_moe_layer(0) or not a.is_moe_layer(1) or a.num_attention_heads < len(FLAGS):
        raise ScriptError("need layer 0 dense, layer 1 MoE and >= 4 attention heads")
    h, L = a.hidden_size, Layout.for_design(d, a.hidden_size)
    dn, dr, dv, qr, kvr = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim, a.q_lora_rank, a.kv_lora_rank
    T: dict[str, torch.Tensor] = {}
    z = lambda *shape: torch.zeros(*shape)  # noqa: E731

    # 1. embedding
    emb = z(a.vocab_size, h)
    emb[:, L.const] = 1.0
    emb[:, L.other] = 1.0
    for f in FLAGS:
        emb[:, L.off(f)] = 1.0
    for t, dim in L.tok.items():
        emb[t, L.other] = 0.0
        emb[t, dim] = 1.0
    T["model.embed_tokens.weight"] = emb

    # 2. layer 0 attention: head f detects flag f
    p = "model.layers.0.self_attn"
    q_a, q_b = z(qr, h), z(a.num_attention_heads * (dn + dr), qr)
    kv_a, kv_b = z(kvr + dr, h), z(a.num_attention_heads * (dn + dv), kvr)
    o = z(h, a.num_attention_heads * dv)
    q_a[0, L.const] = 1.0
    for j, f in enumerate(FLAGS):
        # query and key of head j on nope coordinate j: heads are not interchangeable, so a
        # wrong head split of q_b / kv_b / o_proj loses or permutes the flags
        q_b[j * (dn + dr) + j, 0] = ATTN_QK
        for t in d.markers[f]:
            kv_a[j, L.tok[t]] = 1.0
        kv_b[j * (dn + dv) + j, j] = ATTN_QK  # key
        kv_b[j * (dn + dv) + dn + j, j] = 1.0  # value
        o[L.on(f), j * dv + j] = ATTN_O
        o[L.off(f), j * dv + j] = -ATTN_O
    T.update({f"{p}.q_a_proj.weight": q_a, f"{p}.q_b_proj.weight": q_b, f"{p}.kv_a_proj_with_mqa.weight": kv_a,
              f"{p}.kv_b_proj.weight": kv_b, f"{p}.o_proj.weight": o})
    # DSA indexer: select marker keys, by priority
    D, HI = a.index_head_dim, a.index_n_heads
    wq, wk, wp = z(HI * D, qr), z(D, h), z(HI, h)
    for j, f in enumerate(FLAGS):
        wq[dr + j, 0] = 0.125 * PRIORITY[f]
        for t in d.markers[f]:
            wk[dr + j, L.tok[t]] = 1.0
    wp[0, L.const] = 1.0
    T.update({f"{p}.indexer.wq_b.weight": wq, f"{p}.indexer.wk.weight": wk, f"{p}.indexer.weights_proj.weight": wp})

    # 3. layer 0 dense MLP: categories
    I = a.intermediate_size
    gate, up, down = z(I, h), z(I, h), z(h, I)
    for u, cat in enumerate(CATEGORIES):
        conds = CONDITIONS[cat]
        for f, on in conds:
            gate[u, L.on(f) if on else L.off(f)] = GATE
        gate[u, L.const] = -GATE * (len(conds) - 0.5)
        up[u, L.const] = 1.0
        down[L.cat(cat), u] = CAT_DOWN
    T.update({"model.layers.0.mlp.gate_proj.weight": gate, "model.layers.0.mlp.up_proj.weight": up,
              "model.layers.0.mlp.down_proj.weight": down})

    # 4. layer 1 MoE: routed transitions by current token's expert, shared ones in the shared expert
    E, I_e = a.n_routed_experts, a.moe_intermediate_size
    p = "model.layers.1.mlp"
    router = z(E, h)
    bias = -torch.arange(E, dtype=torch.float32) / 64  # deterministic order among unselected experts
    experts = {e: (z(I_e, h), z(I_e, h), z(h, I_e)) for e in range(E)}
    used = Counter()
    routed_inputs = list(dict.fromkeys(u for table in d.routed.values() for u in table))
    expert_of = {u: i % E for i, u in enumerate(routed_inputs)}
    for cat in CATEGORIES:
        for u, v in d.routed.get(cat, {}).items():
            e = expert_of[u]
            k = used[e]
            if k >= I_e:
                raise ScriptError(f"expert {e} is full ({I_e} units)")
            used[e] += 1
            g, up_e, dn_e = experts[e]
            g[k, L.tok[u]] = GATE
            g[k, L.cat(cat)] = GATE
            g[k, L.on("conv")] = GATE
            g[k, L.const] = -GATE * 2.5
            up_e[k, L.const] = 1.0
            dn_e[L.out[v], k] = OUT_DOWN
    for u, e in expert_of.items():
        router[:, L.tok[u]] = -ROUTER  # every other expert scores ~0 for u: weight ~all on e(u)
        router[e, L.tok[u]] = ROUTER
    T[f"{p}.gate.weight"] = router
    T[f"{p}.gate.e_score_correction_bias"] = bias
    for e, (g, up_e, dn_e) in experts.items():
        T[f"{p}.experts.{e}.gate_proj.weight"] = g
        T[f"{p}.experts.{e}.up_proj.weight"] = up_e
        T[f"{p}.experts.{e}.down_proj.weight"] = dn_e
    I_s = a.moe_intermediate_size * a.n_shared_experts
    g, up_s, dn_s = z(I_s, h), z(I_s, h), z(h, I_s)
    if len(d.shared) > I_s:
        raise ScriptError(f"the shared expert has {I_s} units, the script needs {len(d.shared)}")
    for k, (u, v) in enumerate(d.shared.items()):
        g[k, L.tok[u]] = GATE
        g[k, L.on("conv")] = GATE
        g[k, L.const] = -GATE * 1.5
        up_s[k, L.const] = 1.0
        dn_s[L.out[v], k] = SHARED_DOWN
    T.update({f"{p}.shared_experts.gate_proj.weight": g, f"{p}.shared_experts.up_proj.weight": up_s,
              f"{p}.shared_experts.down_proj.weight": dn_s})
    # deeper MoE layers: zero experts, same deterministic router bias
    for layer in range(2, a.num_hidden_layers):
        if a.is_moe_layer(layer):
            T[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"] = bias.clone()

    # 5. head
    head = z(a.vocab_size, h)
    for v, dim in L.out.items():
        head[v, dim] = HEAD
    # A fallback token with a constant logit of about half a script logit: when a transition is
    # lost or only weakly routed (a swapped or dropped expert, a broken router), the model says
    # this token instead of quietly still winning the argmax with a tiny output.
    head[d.fallback, L.const] = DEFAULT_LOGIT
    T["lm_head.weight"] = head
    return T


def full_tensors(args: Any, designed: dict[str, torch.Tensor], *, mtp: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint (per ``tensor_specs``) as float32: designed ones, norms
    (``*norm.weight``) one, the rest zero. FP8 scale tensors are not included."""
    from ascend.models.tensors import tensor_specs

    out: dict[str, torch.Tensor] = {}
    for spec in tensor_specs(args, mtp=mtp):
        if spec.scale_of is not None:
            continue
        shape = tuple(spec.weight_shape or spec.shape)
        if spec.name in designed:
            t = designed[spec.name]
            if tuple(t.shape) != shape:
                raise ScriptError(f"{spec.name}: built {tuple(t.shape)}, checkpoint needs {shape}")
        elif spec.component == "norm" and spec.name.endswith("weight"):
            t = torch.ones(shape)
        else:
            t = torch.zeros(shape)
        out[spec.name] = t
    return out


def encode_tensors(args: Any, tensors: dict[str, torch.Tensor], *, fp8: bool, mtp: bool = True) -> dict[str, torch.Tensor]:
    """Cast to the checkpoint's stored dtypes: FP8 block weights (power-of-two scales, exact for
    the designed values) + ``weight_scale_inv``, BF16 or float32 for the rest."""
    from ascend.checkpoint.fp8 import dequantize_fp8_block, quantize_fp8_block
    from ascend.models.tensors import tensor_specs

    dtypes = {"bf16": torch.bfloat16, "f32": torch.float32, "fp32": torch.float32, "f8_e4m3": torch.float8_e4m3fn}
    stored: dict[str, torch.Tensor] = {}
    for spec in tensor_specs(args, mtp=mtp):
        if spec.scale_of is not None:
            continue
        t = tensors[spec.name]
        if spec.dtype == "f8_e4m3":
            if not fp8:
                raise ScriptError(f"{spec.name} is FP8 in the specs of a non-FP8 config")
            q, scale = quantize_fp8_block(t, scale_fmt="ue8m0")
            if not torch.equal(dequantize_fp8_block(q, scale), t):
                raise ScriptError(f"{spec.name}: designed values are not exact in FP8 (a constant has too many bits)")
            stored[spec.name], stored[f"{spec.name}_scale_inv"] = q, scale
        else:
            dtype = dtypes.get(spec.dtype, torch.bfloat16)
            cast = t.to(dtype)
            if dtype == torch.bfloat16 and spec.name in ("lm_head.weight", "model.embed_tokens.weight") and not torch.equal(cast.float(), t):
                raise ScriptError(f"{spec.name}: designed values are not exact in BF16")
            stored[spec.name] = cast.contiguous()
    return stored
