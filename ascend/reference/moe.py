"""Feed-forward blocks: the dense SwiGLU MLP and the MoE layer (router, routed and shared experts).

MoE stages (the same names as ``ascend.ops.moe``): route -> dispatch -> experts -> combine.

- route: ``noaux_tc`` sigmoid routing with the correction bias used for selection only, optional
  group limiting (DeepSeek-V3: 8 groups, keep 4; group score = sum of the group's top-2), top-k,
  weights from the unbiased sigmoid, normalized (``+1e-20``) when ``norm_topk_prob``, times
  ``routed_scaling_factor`` (checkpoints.md §7; transformers ``DeepseekV3TopkRouter``; discarded
  groups masked with -inf as DeepSeek and torch_npu do).
- dispatch: every rank receives the tokens of every attention-DP group (``Parallel.gather_dp_tokens``).
- experts: each rank runs the experts it owns (EP) on its slice of their intermediate dim (MoE TP).
- combine: partial outputs are summed over the world, each DP group takes its rows back.
The shared expert is split the way ``tensor_specs`` says (its ``group``): over attention TP it
runs on the DP group's own tokens and is all-reduced in the group, like the dense MLP; over MoE TP
it runs on the dispatched tokens and, since every EP group holds a full copy, only EP rank 0's
group adds it to the combine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ascend.reference.parallel import Parallel
from ascend.models.args import ModelArgs


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``down(silu(gate x) * up x)``; ``x``: [N, h]; gate/up: [I, h]; down: [h, I]."""
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


class DenseMLP:
    """Dense SwiGLU MLP: gate/up column-split, down row-split over attention TP.

    ``x``: [N, hidden] -> [N, hidden] (all-reduced over the attention-TP group).
    """

    def __init__(self, read, prefix: str, par: Parallel):
        self.par = par
        self.gate = read(f"{prefix}.gate_proj.weight")  # [I_local, h]
        self.up = read(f"{prefix}.up_proj.weight")
        self.down = read(f"{prefix}.down_proj.weight")  # [h, I_local]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.par.all_reduce_attn(swiglu(x, self.gate, self.up, self.down))


def route(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, top_k: int, n_group: int, topk_group: int,
    norm_topk_prob: bool, scaling: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``noaux_tc`` routing. ``x``: [N, hidden]; ``weight``: [E, hidden]; ``bias``: [E] float32.

    Returns ``topk_ids`` [N, top_k] int64 and ``topk_weights`` [N, top_k] float32.
    """
    scores = torch.sigmoid(x @ weight.T)  # [N, E]
    choice = scores if bias is None else scores + bias
    if n_group > 1:
        N, E = choice.shape
        grouped = choice.view(N, n_group, E // n_group)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # [N, n_group]
        keep = group_scores.topk(topk_group, dim=-1).indices
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
        choice = grouped.masked_fill(~group_mask[..., None], float("-inf")).view(N, E)
    ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids, weights * scaling


class LocalExperts:
    """The routed experts this rank owns (EP range) and its MoE-TP slice of each.

    ``gate_up``: [E_local, 2 * I_local, hidden] (gate rows first); ``down``: [E_local, hidden, I_local];
    ``first``: global id of local expert 0.
    """

    def __init__(self, read, prefix: str, n_experts: int):
        gate_up, down, owned = [], [], []
        for e in range(n_experts):
            g = read(f"{prefix}.{e}.gate_proj.weight")  # None unless this EP rank owns expert e
            if g is None:
                continue
            owned.append(e)
            gate_up.append(torch.cat([g, read(f"{prefix}.{e}.up_proj.weight")]))
            down.append(read(f"{prefix}.{e}.down_proj.weight"))
        if not owned or owned != list(range(owned[0], owned[0] + len(owned))):
            raise ValueError(f"{prefix}: this rank must own a contiguous, non-empty expert range, got {owned}")
        self.first, self.count = owned[0], len(owned)
        self.gate_up = torch.stack(gate_up)
        self.down = torch.stack(down)


def run_experts(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, experts: LocalExperts) -> torch.Tensor:
    """THE routed-expert call site: ``sum_k w_k * expert_{id_k}(x)`` over this rank's experts.

    ``x``: [N, hidden]; ``topk_ids``/``topk_weights``: [N, k]. Tokens routed to experts of other
    ranks contribute nothing here (their owners add them in the combine). Plain per-expert loop
    (DeepSeek ``MoE.forward``): gather each expert's tokens, SwiGLU, scale, scatter-add.
    """
    out = torch.zeros_like(x)
    inter = experts.down.shape[-1]
    local = topk_ids - experts.first
    for e in range(experts.count):
        token, slot = torch.nonzero(local == e, as_tuple=True)
        if token.numel() == 0:
            continue
        gu = x[token] @ experts.gate_up[e].T
        y = (F.silu(gu[:, :inter]) * gu[:, inter:]) @ experts.down[e].T
        out.index_add_(0, token, y * topk_weights[token, slot, None])
    return out


class MoE:
    """Router + routed experts (EP/MoE-TP) + shared expert (attention TP). [N, hidden] -> [N, hidden]."""

    def __init__(self, read, prefix: str, a: ModelArgs, par: Parallel, shared_group: str | None):
        self.a, self.par = a, par
        self.router = read(f"{prefix}.gate.weight")  # [E, h]
        self.bias = read(f"{prefix}.gate.e_score_correction_bias")  # [E] float32
        self.experts = LocalExperts(read, f"{prefix}.experts", a.n_routed_experts)
        self.shared, self.shared_group = None, None
        if a.n_shared_experts:
            p = f"{prefix}.shared_experts"
            self.shared = (read(f"{p}.gate_proj.weight"), read(f"{p}.up_proj.weight"), read(f"{p}.down_proj.weight"))
            self.shared_group = shared_group  # the TP group tensor_specs splits it over: "attn" or "moe"

    def forward(self, x: torch.Tensor, dp_counts: list[int]) -> torch.Tensor:
        """``x``: [dp_counts[dp_rank], h] (this DP group's tokens) -> [same, h]."""
        a, par = self.a, self.par
        tokens = par.gather_dp_tokens(x, dp_counts)  # dispatch: [sum(dp_counts), h]
        ids, weights = route(
            tokens, self.router, self.bias, top_k=a.num_experts_per_tok, n_group=a.n_group,
            topk_group=a.topk_group, norm_topk_prob=a.norm_topk_prob, scaling=a.routed_scaling_factor,
        )
        out = run_experts(tokens, ids, weights, self.experts)
        if self.shared_group == "moe" and par.ep_rank == 0:
            out = out + swiglu(tokens, *self.shared)
        out = par.my_dp_rows(par.all_reduce_world(out), dp_counts)  # combine
        if self.shared_group == "attn":
            out = out + par.all_reduce_attn(swiglu(x, *self.shared))
        return out
