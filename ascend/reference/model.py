"""The reference model: embedding -> decoder layers (attention + dense MLP or MoE) -> norm -> head,
plus the MTP (next-n) layer. One class for the four families; ``ModelArgs`` says which blocks.

| family         | attention                          | indexer RoPE | routing          | RoPE           |
|----------------|------------------------------------|--------------|------------------|----------------|
| glm_moe_dsa    | MLA + DSA indexer                  | interleaved  | sigmoid, 1 group | default, inter.|
| deepseek_v3    | MLA                                | -            | 8 groups, keep 4 | YaRN, inter.   |
| deepseek_v32   | MLA + DSA indexer                  | NeoX         | 8 groups, keep 4 | YaRN, inter.   |
| glm4_moe       | GQA, bias, QK-norm, partial RoPE   | -            | sigmoid, 1 group | default, NeoX  |

A forward step takes several sequences at once (``Sequence`` holds each one's KV caches and
length): new tokens are appended to the caches, so the first call is the prefill and later calls
decode. Hidden states returned are after the final norm ([N, hidden] float32, N = new tokens of
all sequences); ``logits`` turns them into [N, vocab] float32.

MTP (checkpoints.md §3; transformers ``MtpLayer``): for main-model position p with final-normed
hidden ``h_p`` and the next token ``t_{p+1}``: ``x = eh_proj([enorm(embed(t_{p+1})) | hnorm(h_p)])``,
one MoE decoder layer with its own KV cache, ``shared_head.norm``, ``shared_head.head`` (the
main embedding / head when the MTP copies are absent) -> logits for token p+2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ascend.errors import AscendError, CheckpointError
from ascend.models.args import ModelArgs, load_model_args
from ascend.models.sharding import vocab_range
from ascend.reference.attention import DSAIndexer, GQAAttention, MLAAttention, SeqSlice
from ascend.reference.layers import Rope, rms_norm
from ascend.reference.moe import DenseMLP, MoE
from ascend.reference.parallel import Parallel
from ascend.reference.weights import CheckpointReader


@dataclass
class Sequence:
    """Per-sequence state on one rank: caches of every main layer and of the MTP layer."""

    length: int = 0  # tokens already in the main caches
    caches: list[dict] = field(default_factory=list)
    mtp_length: int = 0
    mtp_cache: dict = field(default_factory=dict)


class DecoderLayer:
    """``h = x + attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))``."""

    def __init__(self, reader: CheckpointReader, a: ModelArgs, layer: int, par: Parallel, rope: Rope):
        p = f"model.layers.{layer}"
        read = reader.read
        self.a = a
        self.input_norm = read(f"{p}.input_layernorm.weight")
        self.post_norm = read(f"{p}.post_attention_layernorm.weight")
        # anti-outlier smoothing (static W8A8, GLM-4.x) may give the norms a bias
        self.input_norm_bias = reader.read_extra(f"{p}.input_layernorm.bias")
        self.post_norm_bias = reader.read_extra(f"{p}.post_attention_layernorm.bias")
        if a.is_mla:
            if a.has_indexer and not a.layer_has_indexer(layer):
                raise CheckpointError(
                    f"layer {layer}: shared-indexer (IndexShare) layers are not supported by the reference model",
                    fix="use a checkpoint with indexer_types all 'full' (GLM-5 / GLM-5.1, DeepSeek-V3.2)",
                )
            indexer = DSAIndexer(read, f"{p}.self_attn.indexer", a) if a.layer_has_indexer(layer) else None
            self.attn = MLAAttention(read, f"{p}.self_attn", a, par, indexer)
        else:
            self.attn = GQAAttention(read, f"{p}.self_attn", a, par, rope)
        self.moe = a.is_moe_layer(layer)
        if self.moe:
            shared = reader.specs.get(f"{p}.mlp.shared_experts.gate_proj.weight")
            self.mlp = MoE(read, f"{p}.mlp", a, par, shared.group if shared else None)
        else:
            self.mlp = DenseMLP(read, f"{p}.mlp", par)

    def forward(self, x, seqs: list[SeqSlice], cos, sin, dp_counts: list[int]) -> torch.Tensor:
        """``x``: [N, h] -> [N, h]."""
        eps = self.a.rms_norm_eps
        h = x + self.attn.forward(_add(rms_norm(x, self.input_norm, eps), self.input_norm_bias), seqs, cos, sin)
        y = _add(rms_norm(h, self.post_norm, eps), self.post_norm_bias)
        return h + (self.mlp.forward(y, dp_counts) if self.moe else self.mlp.forward(y))


def _add(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias


class VocabParallel:
    """Vocabulary-parallel embedding and head over the attention-TP group (``vocab_range`` chunks)."""

    def __init__(self, weight: torch.Tensor, vocab: int, par: Parallel):
        self.weight, self.par = weight, par  # [V_local, h]
        self.lo, self.hi = vocab_range(vocab, par.tp_rank, par.attn_tp)
        ranges = [vocab_range(vocab, r, par.attn_tp) for r in range(par.attn_tp)]
        self.widths = [hi - lo for lo, hi in ranges]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: [N] int64 -> [N, h]: local rows looked up, others zero, summed over the group."""
        mine = (ids >= self.lo) & (ids < self.hi)
        out = self.weight.new_zeros(ids.shape[0], self.weight.shape[1])
        out[mine] = self.weight[ids[mine] - self.lo]
        return self.par.all_reduce_attn(out)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``h``: [N, h] -> [N, V] float32 (local columns gathered over the group)."""
        return self.par.all_gather_attn(h @ self.weight.T, self.widths)


def make_rope(a: ModelArgs) -> Rope:
    rp = a.rope_parameters
    kind = rp.get("rope_type", "default")
    if kind not in ("default", "yarn"):
        raise CheckpointError(f"config.json: rope type {kind!r} is not supported by the reference model", fix="use default or yarn")
    dim = a.qk_rope_head_dim if a.is_mla else int(a.head_dim * float(rp.get("partial_rotary_factor", 1.0)))
    return Rope(dim, float(rp["rope_theta"]), rp if kind == "yarn" else None)


class ReferenceModel:
    """One rank's part of a model (the whole model when ``par`` is single-process)."""

    def __init__(self, model_dir: str | Path, par: Parallel | None = None, *, mtp: bool = True):
        self.par = par or Parallel()
        self.args = a = load_model_args(model_dir)
        par = self.par
        check_layout(a, par)
        self.reader = reader = CheckpointReader(model_dir, a, par.coords, rank=par.rank, world_size=par.world_size)
        read = reader.read
        self.rope = make_rope(a)
        self.embedding = VocabParallel(read("model.embed_tokens.weight"), a.vocab_size, par)
        self.layers = [DecoderLayer(reader, a, i, par, self.rope) for i in range(a.num_hidden_layers)]
        self.norm = read("model.norm.weight")
        head = self.embedding.weight if a.tie_word_embeddings and not reader.has("lm_head.weight") else read("lm_head.weight")
        self.head = VocabParallel(head, a.vocab_size, par)
        self.mtp = None
        if mtp and a.num_nextn_predict_layers and reader.has(f"model.layers.{a.num_hidden_layers}.eh_proj.weight"):
            self.mtp = MTPLayer(read, reader, a, par, self.rope, self.embedding, self.head)
        reader.close()

    @property
    def vocab_size(self) -> int:
        return self.args.vocab_size

    def check_tokens(self, token_lists: list[list[int]], lengths: list[int] | None = None) -> None:
        """Raise (before any collective) on empty lists, token ids outside the vocabulary, or
        sequences (``lengths``: tokens already cached) growing past ``max_position_embeddings``."""
        V, limit = self.args.vocab_size, self.args.max_position_embeddings
        for i, toks in enumerate(token_lists):
            if len(toks) == 0:
                raise AscendError(f"sequence {i}: no tokens to run")
            bad = [t for t in toks if not 0 <= int(t) < V]
            if bad:
                raise AscendError(f"sequence {i}: token id {bad[0]} is outside the vocabulary [0, {V})")
            done = lengths[i] if lengths else 0
            if limit and done + len(toks) > limit:
                raise AscendError(f"sequence {i}: {done + len(toks)} tokens exceed max_position_embeddings {limit}")

    def forward(self, seqs: list[Sequence], token_lists: list[list[int]], dp_counts: list[int] | None = None) -> torch.Tensor:
        """Append ``token_lists[i]`` to ``seqs[i]`` and run them. Returns final-normed hidden
        states [N, h] float32 (rows in sequence order). ``dp_counts``: new tokens per DP group
        (every rank of the world must call this with the same counts; default: single group)."""
        ids, positions, slices = _layout(seqs, token_lists, lambda s: s.length)
        dp_counts = dp_counts or [ids.shape[0]]
        for seq in seqs:
            while len(seq.caches) < len(self.layers):
                seq.caches.append({})
        x = self.embedding.embed(ids)
        cos, sin = self.rope.cos_sin(positions)
        for li, layer in enumerate(self.layers):
            views = [SeqSlice(rows, pos, seq.caches[li]) for seq, (rows, pos) in zip(seqs, slices)]
            x = layer.forward(x, views, cos, sin, dp_counts)
        for seq, toks in zip(seqs, token_lists):
            seq.length += len(toks)
        return rms_norm(x, self.norm, self.args.rms_norm_eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, h] final-normed hidden -> [N, vocab] float32."""
        return self.head.logits(hidden)


class MTPLayer:
    """The MTP (next-n) layer at index ``num_hidden_layers`` (see module docstring)."""

    def __init__(self, read, reader: CheckpointReader, a: ModelArgs, par: Parallel, rope: Rope, embedding, head):
        L = a.num_hidden_layers
        p = f"model.layers.{L}"
        self.a, self.rope = a, rope
        self.enorm = read(f"{p}.enorm.weight")
        self.hnorm = read(f"{p}.hnorm.weight")
        self.eh_proj = read(f"{p}.eh_proj.weight")  # [h, 2h]: embedding half first
        self.layer = DecoderLayer(reader, a, L, par, rope)
        self.norm = read(f"{p}.shared_head.norm.weight")
        has_copies = reader.has(f"{p}.embed_tokens.weight")
        self.embedding = VocabParallel(read(f"{p}.embed_tokens.weight"), a.vocab_size, par) if has_copies else embedding
        has_head = reader.has(f"{p}.shared_head.head.weight")
        self.head = VocabParallel(read(f"{p}.shared_head.head.weight"), a.vocab_size, par) if has_head else head

    def forward(self, seqs: list[Sequence], hidden: torch.Tensor, next_tokens: list[list[int]],
                dp_counts: list[int] | None = None) -> torch.Tensor:
        """``hidden``: [N, h] main-model final-normed states at positions ``seq.mtp_length ...``;
        ``next_tokens[i]``: the tokens one position later. Returns [N, vocab] logits (next-next token)."""
        ids, positions, slices = _layout(seqs, next_tokens, lambda s: s.mtp_length)
        dp_counts = dp_counts or [ids.shape[0]]
        eps = self.a.rms_norm_eps
        e = rms_norm(self.embedding.embed(ids), self.enorm, eps)
        x = torch.cat([e, rms_norm(hidden, self.hnorm, eps)], dim=-1) @ self.eh_proj.T
        cos, sin = self.rope.cos_sin(positions)
        views = [SeqSlice(rows, pos, seq.mtp_cache) for seq, (rows, pos) in zip(seqs, slices)]
        x = self.layer.forward(x, views, cos, sin, dp_counts)
        for seq, toks in zip(seqs, next_tokens):
            seq.mtp_length += len(toks)
        return self.head.logits(rms_norm(x, self.norm, eps))


def _layout(seqs: list[Sequence], token_lists: list[list[int]], start_of) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Concatenate the sequences' new tokens: ids [N], positions [N], per sequence (rows, positions)."""
    ids, positions, slices, row = [], [], [], 0
    for seq, toks in zip(seqs, token_lists):
        n, start = len(toks), start_of(seq)
        pos = torch.arange(start, start + n)
        slices.append((slice(row, row + n), pos))
        ids.append(torch.as_tensor(list(toks), dtype=torch.int64))
        positions.append(pos)
        row += n
    if not ids:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), []
    return torch.cat(ids), torch.cat(positions), slices


def check_layout(a: ModelArgs, par: Parallel) -> None:
    """Divisibility checks with messages naming the values (before any weight is read)."""
    from ascend.errors import PlanError

    heads = a.num_attention_heads
    if heads % par.attn_tp:
        raise PlanError(f"attention TP {par.attn_tp} (= world {par.world_size} / dp {par.dp}) does not divide {heads} heads")
    if a.n_routed_experts and a.n_routed_experts % par.ep:
        raise PlanError(f"ep {par.ep} does not divide {a.n_routed_experts} routed experts")
    if a.moe_intermediate_size % par.moe_tp:
        raise PlanError(f"MoE TP {par.moe_tp} (= world / ep) does not divide moe_intermediate_size {a.moe_intermediate_size}")
