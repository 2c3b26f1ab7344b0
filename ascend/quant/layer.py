"""One decoder layer for calibration, built from the reference runtime's blocks.

``h = x + attn(input_layernorm(x) [+ norm bias])``; ``out = h + mlp(post_attention_layernorm(h))``
exactly as ``ascend.reference.model.DecoderLayer`` (the attention classes, the dense MLP and
``ops.moe.route`` / ``expert_mlp`` are the reference's own), with two differences:
- the attention is run separately from the MLP, so the calibration tokens, the float held-out
  tokens and the simulated held-out tokens share ONE pass over the layer's experts;
- routed experts are streamed ``expert_chunk`` at a time from the checkpoint, so the layer's
  experts are never all in memory (a GLM-5 layer is ~39 GB in float32).
Weights are read through ``LayerWeights``: checkpoint tensors (FP8 dequantized by
``CheckpointReader``), overridden by smoothed ones, static linears wrapped as ``Probe``.
"""

from __future__ import annotations

import torch

import ascend.ops.moe as moe_ops
from ascend.models.args import ModelArgs
from ascend.quant.sim import Probe, fake_quant_weight
from ascend.reference.attention import DSAIndexer, GQAAttention, MLAAttention, SeqSlice
from ascend.reference.layers import Rope, rms_norm
from ascend.reference.moe import DenseMLP, swiglu
from ascend.reference.parallel import Parallel
from ascend.reference.weights import CheckpointReader


class LayerWeights:
    """``read`` for the reference blocks: ``override`` tensors first, then the checkpoint; static
    linears' weights become probes calling ``hook`` (fake-quantized first when ``quant_weights``)."""

    def __init__(self, reader: CheckpointReader, static: set[str], hook, override: dict | None = None,
                 quant_weights: bool = False, device: str = "cpu"):
        self.reader, self.static, self.hook = reader, static, hook
        self.override, self.quant_weights, self.device = override or {}, quant_weights, device

    def optional(self, name: str) -> torch.Tensor | None:
        if name in self.override:
            return self.override[name].to(self.device)
        return self.reader.read(name).to(self.device) if self.reader.has(name) else None

    def __call__(self, name: str) -> torch.Tensor:
        t = self.optional(name)
        if t is None:
            t = self.reader.read(name)  # raises the reader's one-line error
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module in self.static:
            return Probe(fake_quant_weight(t) if self.quant_weights else t, module, self.hook)
        return t


class Attention:
    """The attention half of a decoder layer (``input_layernorm`` + the family's attention)."""

    def __init__(self, read: LayerWeights, a: ModelArgs, layer: int, rope: Rope):
        p = f"model.layers.{layer}"
        self.a = a
        self.norm = read(f"{p}.input_layernorm.weight")
        self.norm_bias = read.optional(f"{p}.input_layernorm.bias")  # anti-outlier smoothing only
        par = Parallel()
        if a.is_mla:
            indexer = DSAIndexer(read, f"{p}.self_attn.indexer", a) if a.layer_has_indexer(layer) else None
            self.attn = MLAAttention(read, f"{p}.self_attn", a, par, indexer)
        else:
            self.attn = GQAAttention(read, f"{p}.self_attn", a, par, rope)

    def forward(self, x: torch.Tensor, seqs: list[SeqSlice], cos, sin) -> torch.Tensor:
        y = rms_norm(x, self.norm, self.a.rms_norm_eps)
        if self.norm_bias is not None:
            y = y + self.norm_bias
        return x + self.attn.forward(y, seqs, cos, sin)


def mlp_forward(reader: CheckpointReader, a: ModelArgs, layer: int, h: torch.Tensor, *, expert_chunk: int,
                device: str = "cpu") -> torch.Tensor:
    """``h + mlp(post_attention_layernorm(h))`` for [N, hidden] (tokens independent)."""
    p = f"model.layers.{layer}"
    read = lambda name: reader.read(name).to(device)
    y = rms_norm(h, read(f"{p}.post_attention_layernorm.weight"), a.rms_norm_eps)
    if not a.is_moe_layer(layer):
        return h + DenseMLP(read, f"{p}.mlp", Parallel()).forward(y)
    weights, ids = moe_ops.route(
        y @ read(f"{p}.mlp.gate.weight").T, a.num_experts_per_tok, bias=read(f"{p}.mlp.gate.e_score_correction_bias"),
        n_group=a.n_group, topk_group=a.topk_group, routed_scaling_factor=a.routed_scaling_factor,
        norm_topk_prob=a.norm_topk_prob, scoring_func=a.scoring_func,
    )
    out = torch.zeros_like(y)
    flat = ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)  # (token, slot) pairs grouped by expert
    counts = torch.bincount(flat, minlength=a.n_routed_experts)
    ends = torch.cumsum(counts, 0).tolist()
    for lo in range(0, a.n_routed_experts, expert_chunk):
        hi = min(lo + expert_chunk, a.n_routed_experts)
        start, stop = (ends[lo - 1] if lo else 0), ends[hi - 1]
        if start == stop:
            continue  # no token chose these experts: their weights are not even read
        pairs = order[start:stop]
        tokens = pairs // a.num_experts_per_tok
        e = f"{p}.mlp.experts"
        gate_up = torch.stack([torch.cat([read(f"{e}.{i}.gate_proj.weight"), read(f"{e}.{i}.up_proj.weight")]) for i in range(lo, hi)])
        down = torch.stack([read(f"{e}.{i}.down_proj.weight") for i in range(lo, hi)])
        rows = moe_ops.expert_mlp(y[tokens], counts[lo:hi], gate_up, down)
        out.index_add_(0, tokens, rows * weights.reshape(-1)[pairs, None])
        del gate_up, down, rows
    if a.n_shared_experts:
        s = f"{p}.mlp.shared_experts"
        out = out + swiglu(y, read(f"{s}.gate_proj.weight"), read(f"{s}.up_proj.weight"), read(f"{s}.down_proj.weight"))
    return h + out


def run_attention(attn: Attention, rope: Rope, x: torch.Tensor, lengths: list[int], batch_tokens: int) -> torch.Tensor:
    """``attn`` over the concatenated sequences of ``lengths`` (each a fresh prefill from
    position 0), in batches of whole sequences of about ``batch_tokens`` rows."""
    out = torch.empty_like(x)
    row, i = 0, 0
    while i < len(lengths):
        seqs, start = [], row
        while i < len(lengths) and (not seqs or row - start + lengths[i] <= batch_tokens):
            n = lengths[i]
            seqs.append(SeqSlice(slice(row - start, row - start + n), torch.arange(n), {}))
            row, i = row + n, i + 1
        positions = torch.cat([s.positions for s in seqs]).to(x.device)
        cos, sin = rope.cos_sin(positions)
        out[start:row] = attn.forward(x[start:row], seqs, cos, sin)
    return out
