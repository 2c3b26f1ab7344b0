"""Process layout and collectives of the sharded reference runtime (one OS process per rank, gloo).

Layout (as xLLM): ``world = dp * attention_tp = ep * moe_tp``.

- Attention data parallelism: rank ``r`` belongs to DP group ``r // attention_tp``; inside it,
  its attention-TP rank is ``r % attention_tp``. Each DP group runs its own sequences through
  embedding, attention, dense MLPs, shared experts and the head, split over its ``attention_tp``
  ranks (heads, columns, vocabulary).
- Expert parallelism spans the whole world: rank ``r`` owns the expert range of EP rank
  ``r // moe_tp`` and the ``r % moe_tp``-th slice of each of those experts' intermediate
  dimension. The ``ep`` ranks sharing a MoE-TP index form an EP group (``ep_group``), over which
  ``ascend.ops.moe.dispatch`` / ``combine`` move tokens to their experts' owners and back.

At an MoE layer the tokens of every DP group are first gathered to every rank; after the experts,
partial outputs are summed over the world and each DP group takes back its rows (``moe.py``).

With ``world == 1`` every collective is a no-op, so the same model code runs unsharded.
"""

from __future__ import annotations

import datetime
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ascend.models.sharding import ParallelLayout


@dataclass
class Parallel:
    """Where this process sits in the layout, and the process groups it talks over."""

    rank: int = 0
    world_size: int = 1
    dp: int = 1
    ep: int = 1
    attn_group: object | None = field(default=None, repr=False)  # this rank's DP group (attention TP)
    ep_group: object | None = field(default=None, repr=False)  # the ep ranks sharing this MoE-TP index

    def __post_init__(self) -> None:
        self.layout = ParallelLayout(1, self.world_size, self.dp, self.ep).check()
        self.coords = self.layout.coords(self.rank)  # for ascend.models.shard_slice

    # --- coordinates (ascend.models.sharding.ParallelLayout decides them) ----------------------
    @property
    def attn_tp(self) -> int:
        return self.layout.attn_tp

    @property
    def dp_rank(self) -> int:
        return self.coords.dp_rank

    @property
    def tp_rank(self) -> int:
        return self.coords.attn_tp_rank

    @property
    def moe_tp(self) -> int:
        return self.layout.moe_tp

    @property
    def ep_rank(self) -> int:
        return self.coords.ep_rank

    @property
    def moe_tp_rank(self) -> int:
        return self.coords.moe_tp_rank

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # --- collectives ---------------------------------------------------------------------------
    def all_reduce_attn(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over this rank's attention-TP group (row-parallel outputs, vocab embedding)."""
        if self.attn_tp > 1:
            dist.all_reduce(x, group=self.attn_group)
        return x

    def all_gather_attn(self, x: torch.Tensor, widths: list[int]) -> torch.Tensor:
        """Concatenate ``x`` [N, widths[tp_rank]] over the attention-TP group along the last dim
        (column-parallel head; chunks may differ in width, e.g. the last vocab chunk)."""
        if self.attn_tp == 1:
            return x
        padded = x.new_zeros(x.shape[0], max(widths))
        padded[:, : x.shape[1]] = x
        parts = [torch.empty_like(padded) for _ in range(self.attn_tp)]
        dist.all_gather(parts, padded, group=self.attn_group)
        return torch.cat([p[:, :w] for p, w in zip(parts, widths)], dim=-1)

    def all_reduce_world(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(x)
        return x

    def all_ok(self, ok: bool) -> bool:
        """Whether every rank reports ``ok`` (collective): lets ranks fail together, not hang."""
        if self.world_size == 1:
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def gather_dp_tokens(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows of every DP group, concatenated in DP order.

        ``x``: [counts[dp_rank], hidden] (identical on all ranks of a DP group);
        ``counts``: tokens per DP group (known to every rank). Returns [sum(counts), hidden].
        """
        if self.dp == 1:
            return x
        width = max(counts)
        padded = x.new_zeros(width, x.shape[-1])
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        # every rank of a DP group holds the same rows: take the group's first rank
        return torch.cat([parts[g * self.attn_tp][: counts[g]] for g in range(self.dp)])

    def my_dp_rows(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """This DP group's rows of a [sum(counts), ...] tensor laid out by ``gather_dp_tokens``."""
        if self.dp == 1:
            return x
        start = sum(counts[: self.dp_rank])
        return x[start : start + counts[self.dp_rank]]


def init_parallel(
    rank: int, world_size: int, dp: int = 1, ep: int = 1, master_addr: str = "127.0.0.1", master_port: int = 0,
    timeout_s: float = 300.0,
) -> Parallel:
    """Join (or skip, for one rank) the gloo process group and build the attention-TP groups.

    Every rank must call this with the same ``world_size``, ``dp``, ``ep``, address and port.
    """
    par = Parallel(rank=rank, world_size=world_size, dp=dp, ep=ep)
    if world_size == 1:
        return par
    if not dist.is_initialized():
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    # new_group is collective: every rank creates every group, in the same order
    for g in range(dp):
        ranks = list(range(g * par.attn_tp, (g + 1) * par.attn_tp))
        group = dist.new_group(ranks) if par.attn_tp > 1 else None
        if g == par.dp_rank:
            par.attn_group = group
    for j in range(par.moe_tp):
        ranks = [e * par.moe_tp + j for e in range(ep)]
        group = dist.new_group(ranks) if ep > 1 else None
        if j == par.moe_tp_rank:
            par.ep_group = group
    return par


def destroy_parallel(par: Parallel) -> None:
    if par.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests and single-host spawning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
