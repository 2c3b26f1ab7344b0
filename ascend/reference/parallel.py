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

The rendezvous store (a ``TCPStore`` served by rank 0, unauthenticated) listens on the master
address only, never on every interface. ``Heartbeat`` uses it to tell rank 0 which ranks are
still alive.
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
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
    store: object | None = field(default=None, repr=False)  # the rendezvous store (world > 1)
    master: tuple[str, int] = ("127.0.0.1", 0)  # the store's address

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
    par = Parallel(rank=rank, world_size=world_size, dp=dp, ep=ep, master=(master_addr, master_port))
    if world_size == 1:
        return par
    if not dist.is_initialized():
        par.store = rendezvous_store(master_addr, master_port, rank, world_size, timeout_s)
        dist.init_process_group("gloo", store=par.store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
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


def rendezvous_store(host: str, port: int, rank: int, world_size: int, timeout_s: float) -> dist.TCPStore:
    """The gloo rendezvous store: rank 0 serves it on ``host`` alone (torch's own server would
    listen on every interface), the other ranks connect to it."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, timeout)
    from ascend.errors import ServeError

    sock = None
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as err:
        if sock is not None:
            sock.close()
        raise ServeError(f"rank 0 cannot serve the rendezvous store on {host}:{port}", why=err.strerror or str(err),
                         fix="rank 0 must run on the master address's host, and the master port must be free") from None
    # the store's server owns the socket from here (detach: Python must not close it)
    return dist.TCPStore(host, port, world_size, True, timeout, master_listen_fd=sock.detach())


class Heartbeat:
    """Rank liveness over the rendezvous store, from a daemon thread on its own connection: every
    rank but 0 bumps its counter each ``interval_s``; rank 0 watches the counters, and
    ``verdict`` names the ranks whose counter has not moved for ``STALE_BEATS`` intervals
    (a dead rank, or one stopped as a whole)."""

    STALE_BEATS = 5

    def __init__(self, par: Parallel, interval_s: float):
        self.rank, self.world_size, self.interval_s = par.rank, par.world_size, interval_s
        host, port = par.master
        self.store = dist.TCPStore(host, port, None, False, datetime.timedelta(seconds=max(10.0, 3 * interval_s)))
        self.verdict: str | None = None  # rank 0: why the ranks are not all alive
        self._stop = threading.Event()
        target = self._watch if self.rank == 0 else self._beat
        self.thread = threading.Thread(target=target, name="heartbeat", daemon=True)
        self.thread.start()

    @staticmethod
    def key(rank: int) -> str:
        return f"ascend/heartbeat/{rank}"

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.add(self.key(self.rank), 1)
            except Exception:  # rank 0 (which serves the store) is gone: nobody to tell
                return
            self._stop.wait(self.interval_s)

    def _watch(self) -> None:
        seen = {r: (-1, time.monotonic()) for r in range(1, self.world_size)}  # rank -> (count, when it moved)
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                for r, (count, _) in seen.items():
                    new = self.store.add(self.key(r), 0)
                    if new != count:
                        seen[r] = (new, now)
            except Exception as err:
                self.verdict = f"cannot read the ranks' heartbeats: {err}"
                continue
            late = [f"rank {r} has sent no heartbeat for {now - when:.0f} s" for r, (_, when) in seen.items()
                    if now - when > self.STALE_BEATS * self.interval_s]
            self.verdict = "; ".join(late) + " (stuck or dead)" if late else None


def destroy_parallel(par: Parallel) -> None:
    if par.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests and single-host spawning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
