"""Attention blocks: MLA (DeepSeek-V3 / GLM-5), the DSA lightning indexer, and GQA (GLM-4.x).

All take ``x``: [N, hidden] float32 (the tokens of every sequence in the step, concatenated) and a
``Step`` describing where each sequence's rows are, their positions and their caches; they return
[N, hidden] already all-reduced over the attention-TP group.

Cache per sequence and layer (a dict in ``LayerCache``):
- MLA: ``c_kv`` [T, kv_lora_rank] (normed latent), ``k_pe`` [T, rope_dim] (roped, shared by all
  heads), ``index_k`` [T, index_head_dim] for DSA layers. Every attention-TP rank holds the whole
  latent cache (it is replicated, only the heads are split).
- GQA: ``k`` [T, kv_heads_local, head_dim] (normed, roped), ``v`` [T, kv_heads_local, head_dim].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ascend.models.args import ModelArgs
from ascend.reference.layers import Rope, attend, causal_mask, layer_norm, linear, rms_norm, yarn_mscale
from ascend.reference.parallel import Parallel

# transformers builds q_a_layernorm / kv_a_layernorm with the module default eps (1e-6), as
# DeepSeek's inference/model.py does; config rms_norm_eps (GLM-5: 1e-5) is for the layer norms.
MLA_LATENT_NORM_EPS = 1e-6


def mla_softmax_scale(a: ModelArgs) -> float:
    """``qk_head_dim^-0.5``, times ``mscale^2`` under YaRN with ``mscale_all_dim`` (checkpoints.md §8.1)."""
    scale = a.qk_head_dim**-0.5
    rp = a.rope_parameters
    if rp.get("rope_type", "default") != "default" and rp.get("mscale_all_dim"):
        m = yarn_mscale(float(rp["factor"]), float(rp["mscale_all_dim"]))
        scale *= m * m
    return scale


@dataclass
class SeqSlice:
    """One sequence's rows in the step: ``rows`` of x, absolute ``positions`` [S], its ``cache``."""

    rows: slice
    positions: torch.Tensor
    cache: dict = field(default_factory=dict)  # this layer's cache entries for this sequence


def _append(cache: dict, key: str, value: torch.Tensor) -> torch.Tensor:
    """Append ``value`` [S, ...] to ``cache[key]`` [T, ...]; return the whole [T + S, ...]."""
    old = cache.get(key)
    cache[key] = value if old is None else torch.cat([old, value])
    return cache[key]


class MLAAttention:
    """Multi-head latent attention (transformers ``DeepseekV3Attention``; checkpoints.md §8.1).

    Per token: ``c_q = RMSNorm(q_a_proj x)`` [q_lora_rank]; ``q = q_b_proj c_q`` -> [H, nope+rope];
    ``kv_a_proj_with_mqa x`` -> ``[c_kv (kv_lora_rank) | k_pe (rope)]``; ``c_kv`` normed;
    ``kv_b_proj c_kv`` -> [H, nope + v]. RoPE (interleaved pairs) on q_pe and the one shared k_pe.
    Scores ``(q_nope.k_nope + q_pe.k_pe) * scale`` with the causal mask (and the DSA top-k mask);
    ``o_proj`` is row-parallel. Heads are split over attention TP.
    """

    def __init__(self, read, prefix: str, a: ModelArgs, par: Parallel, indexer: "DSAIndexer | None"):
        self.par, self.a, self.indexer = par, a, indexer
        if a.q_lora_rank:
            self.q_a = read(f"{prefix}.q_a_proj.weight")  # [q_lora_rank, h]
            self.q_a_norm = read(f"{prefix}.q_a_layernorm.weight")
            self.q_b = read(f"{prefix}.q_b_proj.weight")  # [H_local * (nope + rope), q_lora_rank]
        else:
            self.q_b = read(f"{prefix}.q_proj.weight")  # [H_local * (nope + rope), h]
        self.heads = self.q_b.shape[0] // a.qk_head_dim
        self.kv_a = read(f"{prefix}.kv_a_proj_with_mqa.weight")  # [kv_lora_rank + rope, h]
        self.kv_a_norm = read(f"{prefix}.kv_a_layernorm.weight")
        self.kv_b = read(f"{prefix}.kv_b_proj.weight")  # [H_local * (nope + v), kv_lora_rank]
        self.o = read(f"{prefix}.o_proj.weight")  # [h, H_local * v]
        self.scale = mla_softmax_scale(a)
        # published MLA checkpoints rotate adjacent pairs; ``rope_interleave: false`` (transformers'
        # DeepSeek-V3 switch) means q_b / kv_a rope rows were permuted to the half-split layout
        self.interleaved = a.rope_interleave

    def forward(self, x: torch.Tensor, seqs: list[SeqSlice], cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        a, H = self.a, self.heads
        dn, dr, dv = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
        c_q = rms_norm(linear(x, self.q_a), self.q_a_norm, MLA_LATENT_NORM_EPS) if a.q_lora_rank else x  # [N, q_lora_rank]
        q = linear(c_q, self.q_b).view(-1, H, dn + dr)
        q_nope, q_pe = q[..., :dn], Rope.rotate(q[..., dn:], cos, sin, self.interleaved)
        kv = linear(x, self.kv_a)  # [N, kv_lora_rank + dr]
        c_kv = rms_norm(kv[:, : a.kv_lora_rank], self.kv_a_norm, MLA_LATENT_NORM_EPS)
        k_pe = Rope.rotate(kv[:, a.kv_lora_rank :], cos, sin, self.interleaved)  # [N, dr]

        out = x.new_empty(x.shape[0], H * dv)
        for seq in seqs:
            rows = seq.rows
            all_c = _append(seq.cache, "c_kv", c_kv[rows])  # [T, kvr]
            all_pe = _append(seq.cache, "k_pe", k_pe[rows])  # [T, dr]
            T = all_c.shape[0]
            allowed = causal_mask(seq.positions, T)  # [S, T]
            if self.indexer is not None:
                allowed = allowed & self.indexer.select(x[rows], c_q[rows], cos[rows], sin[rows], seq, allowed)
            kvb = linear(all_c, self.kv_b).view(T, H, dn + dv)
            k = torch.cat([kvb[..., :dn], all_pe[:, None, :].expand(T, H, dr)], dim=-1)
            qs = torch.cat([q_nope[rows], q_pe[rows]], dim=-1)
            out[rows] = attend(qs, k, kvb[..., dn:], allowed, self.scale).reshape(-1, H * dv)
        return self.par.all_reduce_attn(linear(out, self.o))


class DSAIndexer:
    """DSA lightning indexer (checkpoints.md §9; transformers ``DeepseekV32Indexer``).

    ``q = wq_b(c_q)`` [H_I, D] and ``k = LayerNorm(wk(x))`` [D] are laid out **rope-first**
    (``[rope (qk_rope_head_dim) | nope]``); RoPE is interleaved for GLM-5 and NeoX for
    DeepSeek-V3.2. ``I[s, t] = sum_h w[s, h] * relu(q[s, h] . k[t] * D^-0.5)`` with
    ``w = weights_proj(x) * H_I^-0.5``; each query keeps its top-``index_topk`` causal keys.
    Replicated on every rank (no TP split); the Hadamard rotation and FP8 quantization of the
    published kernel are dropped (orthogonal / precision only, as transformers does).
    """

    def __init__(self, read, prefix: str, a: ModelArgs):
        self.a, self.interleaved = a, a.indexer_rope_interleave
        self.wq_b = read(f"{prefix}.wq_b.weight")  # [H_I * D, q_lora_rank]
        self.wk = read(f"{prefix}.wk.weight")  # [D, h]
        self.k_norm_w = read(f"{prefix}.k_norm.weight")  # [D]
        self.k_norm_b = read(f"{prefix}.k_norm.bias")
        self.weights_proj = read(f"{prefix}.weights_proj.weight")  # [H_I, h]

    def select(self, x, c_q, cos, sin, seq: SeqSlice, allowed: torch.Tensor) -> torch.Tensor:
        """``x``: [S, hidden]; ``c_q``: [S, q_lora_rank]; ``allowed``: causal [S, T].
        Returns the bool [S, T] top-k selection (and appends this step's keys to the cache)."""
        a = self.a
        D, HI, dr = a.index_head_dim, a.index_n_heads, a.qk_rope_head_dim
        q = linear(c_q, self.wq_b).view(-1, HI, D)
        q = torch.cat([Rope.rotate(q[..., :dr], cos, sin, self.interleaved), q[..., dr:]], dim=-1)
        k = layer_norm(linear(x, self.wk), self.k_norm_w, self.k_norm_b, 1e-6)  # [S, D]
        k = torch.cat([Rope.rotate(k[:, :dr], cos, sin, self.interleaved), k[:, dr:]], dim=-1)
        keys = _append(seq.cache, "index_k", k)  # [T, D]
        scores = F.relu(torch.einsum("shd,td->sht", q, keys) * D**-0.5)
        w = linear(x, self.weights_proj) * HI**-0.5  # [S, H_I]
        index = torch.einsum("sh,sht->st", w, scores).masked_fill(~allowed, float("-inf"))
        # top-k with ties broken towards earlier positions (a stable sort), so prefill and
        # token-by-token decode select the same keys; torch.topk leaves tie order unspecified
        topk = min(a.index_topk, keys.shape[0])
        chosen = index.sort(dim=-1, descending=True, stable=True).indices[:, :topk]
        return torch.zeros_like(allowed).scatter_(-1, chosen, True)


class GQAAttention:
    """Grouped-query attention of GLM-4.x (transformers ``Glm4MoeAttention``).

    q/k/v projections with bias, per-head RMSNorm on q and k (``use_qk_norm``), NeoX RoPE on the
    first ``rotary_dim`` dims of each head (partial RoPE), scale ``head_dim^-0.5``, ``o_proj``
    without bias (row-parallel). TP splits the q heads; KV heads are split when TP <= kv heads,
    otherwise each rank holds the one KV head its q heads use (checkpoints.md §6.1).
    """

    def __init__(self, read, prefix: str, a: ModelArgs, par: Parallel, rope: Rope):
        self.par, self.a, self.rope = par, a, rope
        d = a.head_dim
        self.q = read(f"{prefix}.q_proj.weight")  # [H_local * d, h]
        self.k = read(f"{prefix}.k_proj.weight")  # [Hkv_local * d, h] (one replicated head when TP > kv heads)
        self.v = read(f"{prefix}.v_proj.weight")
        self.heads, self.kv_heads = self.q.shape[0] // d, self.k.shape[0] // d
        bias = a.attention_bias
        self.q_bias = read(f"{prefix}.q_proj.bias") if bias else None
        self.k_bias = read(f"{prefix}.k_proj.bias") if bias else None
        self.v_bias = read(f"{prefix}.v_proj.bias") if bias else None
        self.o = read(f"{prefix}.o_proj.weight")  # [h, H_local * d]
        self.q_norm = read(f"{prefix}.q_norm.weight") if a.use_qk_norm else None
        self.k_norm = read(f"{prefix}.k_norm.weight") if a.use_qk_norm else None

    def forward(self, x: torch.Tensor, seqs: list[SeqSlice], cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        a, H, Hkv, d = self.a, self.heads, self.kv_heads, self.a.head_dim
        q = linear(x, self.q, self.q_bias).view(-1, H, d)
        k = linear(x, self.k, self.k_bias).view(-1, Hkv, d)
        v = linear(x, self.v, self.v_bias).view(-1, Hkv, d)
        if self.q_norm is not None:
            q, k = rms_norm(q, self.q_norm, a.rms_norm_eps), rms_norm(k, self.k_norm, a.rms_norm_eps)
        rd = self.rope.dim
        q = torch.cat([Rope.rotate(q[..., :rd], cos, sin, interleaved=False), q[..., rd:]], dim=-1)
        k = torch.cat([Rope.rotate(k[..., :rd], cos, sin, interleaved=False), k[..., rd:]], dim=-1)
        out = x.new_empty(x.shape[0], H * d)
        for seq in seqs:
            rows = seq.rows
            ks = _append(seq.cache, "k", k[rows])
            vs = _append(seq.cache, "v", v[rows])
            rep = H // Hkv
            ks, vs = ks.repeat_interleave(rep, dim=1), vs.repeat_interleave(rep, dim=1)
            allowed = causal_mask(seq.positions, ks.shape[0])
            out[rows] = attend(q[rows], ks, vs, allowed, d**-0.5).reshape(-1, H * d)
        return self.par.all_reduce_attn(linear(out, self.o))
