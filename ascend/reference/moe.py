"""Feed-forward blocks: the dense SwiGLU MLP and the MoE layer (router, routed and shared experts).

The MoE layer runs the operators of ``ascend.ops.moe`` (the same calls an NPU engine makes), in the
stages route -> dispatch -> experts -> combine:

- gather: every rank receives the tokens of every attention-DP group (``Parallel.gather_dp_tokens``);
  within an EP group (the ``ep`` ranks sharing one MoE-TP index) each member takes a contiguous
  chunk of them.
- route: ``ops.moe.route`` — ``noaux_tc`` sigmoid routing, correction bias for selection only,
  group limiting (DeepSeek-V3: 8 groups, keep 4; group score = sum of the top-2), top-k, weights
  from the unbiased sigmoid renormalized (``+1e-20``) and scaled by ``routed_scaling_factor``
  (checkpoints.md §7; discarded groups masked with -inf, ties to the lower expert id).
- dispatch / experts / combine: ``ops.moe.dispatch`` sends each (token, slot) row to the EP rank
  owning the expert, ``ops.moe.expert_mlp`` runs the local experts on this rank's MoE-TP slice of
  their width, ``ops.moe.combine`` returns and weights the rows. Single EP rank: ``moe_experts``.
- reduce: partial outputs (MoE-TP slices, token chunks) are summed over the world; each DP group
  takes back its own rows.

The shared expert is split the way ``tensor_specs`` says (its ``group``): over attention TP it
runs on the DP group's own tokens and is all-reduced in the group, like the dense MLP; over MoE TP
it runs on the gathered tokens and, since every EP group holds a full copy, only EP rank 0's
group adds it before the reduce.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ascend.ops.moe as moe_ops
from ascend.models.args import ModelArgs
from ascend.reference.parallel import Parallel


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


class MoE:
    """Router + routed experts (EP / MoE TP) + shared expert. [N, hidden] -> [N, hidden]."""

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
        tokens = par.gather_dp_tokens(x, dp_counts)  # [N, h], N = sum(dp_counts), same on every rank
        weights, ids = moe_ops.route(
            tokens @ self.router.T, a.num_experts_per_tok, bias=self.bias, n_group=a.n_group,
            topk_group=a.topk_group, routed_scaling_factor=a.routed_scaling_factor,
            norm_topk_prob=a.norm_topk_prob, scoring_func=a.scoring_func,
        )
        out = torch.zeros_like(tokens)
        if par.ep == 1:
            out = moe_ops.moe_experts(tokens, weights, ids, self.experts.gate_up, self.experts.down)
        else:  # this rank's chunk of the tokens goes to the experts' owners and comes back
            lo, hi = _chunk(tokens.shape[0], par.ep, par.ep_rank)
            recv, counts, handle = moe_ops.dispatch(
                tokens[lo:hi], ids[lo:hi], weights[lo:hi], par.ep_group, num_experts=a.n_routed_experts
            )
            rows = moe_ops.expert_mlp(recv, counts, self.experts.gate_up, self.experts.down)
            out[lo:hi] = moe_ops.combine(rows, handle)
        if self.shared_group == "moe" and par.ep_rank == 0:
            out = out + swiglu(tokens, *self.shared)
        out = par.my_dp_rows(par.all_reduce_world(out), dp_counts)
        if self.shared_group == "attn":
            out = out + par.all_reduce_attn(swiglu(x, *self.shared))
        return out


def _chunk(n: int, parts: int, index: int) -> tuple[int, int]:
    """[lo, hi) of the ``index``-th of ``parts`` contiguous, near-equal chunks of ``n`` rows."""
    base, extra = divmod(n, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)
