"""Which part of each full tensor a rank holds: THE single place partitioning is decided.

The converter (``layout: sharded``), the sharded CPU reference runtime and the planner all call
:func:`shard_slice`; nobody else computes slices.

Rank conventions (xLLM: attention TP = world / dp, MoE TP = world / ep):

- attention: ``dp_rank = rank // attn_tp``, ``attn_tp_rank = rank % attn_tp`` (contiguous TP
  groups, one per attention-DP group);
- MoE: ``ep_rank = rank // moe_tp``, ``moe_tp_rank = rank % moe_tp`` (contiguous MoE-TP groups);
- experts: EP rank ``r`` owns the contiguous range ``[r·E/ep, (r+1)·E/ep)`` (checkpoints.md
  §6.1); ``E % ep == 0`` is required.

Split rules (see :mod:`ascend.models.tensors` for the per-tensor table):

- column / row: split dim 0 / 1 into ``tp`` equal runs of whole ``units`` (heads for attention,
  so MLA ``q_b_proj`` / ``kv_b_proj`` give each rank whole heads, ``o_proj`` the matching input
  columns). ``units % tp == 0`` is required, except GQA k/v heads: when TP exceeds the KV heads,
  ``tp % kv_heads == 0`` and ranks ``i·tp/kv .. (i+1)·tp/kv − 1`` all hold KV head ``i`` (the one
  their query heads use).
- vocab: embedding and lm_head split dim 0 over the attention-TP group (the ranks of one
  attention-DP group hold the whole vocabulary between them, as xLLM's vocab-parallel
  embedding and column-parallel head do); chunks of ``ceil(V / tp)`` rows, the last possibly
  shorter.
- expert: absent (None) on every EP rank but the owner; on the owner split column/row over the
  MoE-TP group like a column/row tensor.
- replicated: the whole tensor everywhere (q_a, kv_a, the DSA indexer, norms, router, MTP glue).
- FP8 ``weight_scale_inv``: the weight's slice divided by the block (128). Valid only when the
  weight's slice starts on a block boundary and ends on one (or at the tensor's end); otherwise
  :class:`ShardAlignmentError` (a PlanError) says which tensor, which split and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ascend.errors import CheckpointError, PlanError
from ascend.models.args import ceil_div
from ascend.models.tensors import TensorSpec


class ShardAlignmentError(PlanError):
    """A TP split of a block-FP8 tensor does not fall on block boundaries."""


@dataclass(frozen=True)
class ShardCoords:
    """Where one rank sits in the parallel layout.

    Attributes:
        attn_tp_rank, attn_tp_size: position in the attention-TP group (size = world / dp).
        moe_tp_rank, moe_tp_size: position in the MoE-TP group (size = world / ep).
        ep_rank, ep_size: expert-parallel rank and size.
        dp_rank: attention data-parallel group index (does not affect what the rank holds).
    """

    attn_tp_rank: int = 0
    attn_tp_size: int = 1
    moe_tp_rank: int = 0
    moe_tp_size: int = 1
    ep_rank: int = 0
    ep_size: int = 1
    dp_rank: int = 0

    @classmethod
    def for_rank(cls, rank: int, world: int, dp: int = 1, ep: int = 1) -> ShardCoords:
        """Coordinates of global ``rank`` in a world of ``world`` ranks with ``dp`` and ``ep``."""
        return ParallelLayout(1, world, dp, ep).coords(rank)

    def group(self, name: str | None) -> tuple[int, int]:
        """(rank, size) in the TP group ``name`` ("attn" or "moe")."""
        if name == "moe":
            return self.moe_tp_rank, self.moe_tp_size
        return self.attn_tp_rank, self.attn_tp_size


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class ParallelLayout:
    """The deployment's parallel shape: the one place rank -> coordinates is computed.

    ``world = nodes · devices_per_node = dp · attention_tp = ep · moe_tp`` (as xLLM). Ranks are
    numbered node by node: rank ``r`` runs on node ``r // devices_per_node``.
    """

    nodes: int
    devices_per_node: int
    dp: int = 1
    ep: int = 1

    @classmethod
    def from_recipe(cls, recipe: Any) -> ParallelLayout:
        hw, par = recipe.hardware, recipe.parallel
        return cls(hw.nodes, hw.devices_per_node, par.dp, par.ep)

    @property
    def world(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def attn_tp(self) -> int:
        return self.world // self.dp

    @property
    def moe_tp(self) -> int:
        return self.world // self.ep

    def problems(self) -> list[tuple[str, str]]:
        """(recipe key, message) for every size that does not divide the world."""
        world = self.world
        text = f"world size {world} ({self.nodes} node(s) × {self.devices_per_node} devices_per_node)"
        return [(f"parallel.{name}", f"{size} does not divide {text} — use one of {divisors(world)}")
                for name, size in (("dp", self.dp), ("ep", self.ep)) if size < 1 or world % size]

    def check(self) -> ParallelLayout:
        """Raise PlanError (exit 2) for the first size that does not divide the world."""
        for key, message in self.problems():
            raise PlanError(f"{key} = {message}")
        return self

    def __str__(self) -> str:
        return (f"world {self.world} (attention TP {self.attn_tp} x DP {self.dp}), "
                f"EP {self.ep} (MoE TP {self.moe_tp})")

    def node_of(self, rank: int) -> tuple[int, int]:
        """(node, local device) of global ``rank``."""
        return divmod(rank, self.devices_per_node)

    def coords(self, rank: int) -> ShardCoords:
        """Where global ``rank`` sits (contiguous TP groups, see the module docstring)."""
        if self.world < 1 or not 0 <= rank < self.world:
            raise PlanError(f"rank {rank} is outside a world of {self.world} ranks")
        self.check()
        attn_tp, moe_tp = self.attn_tp, self.moe_tp
        return ShardCoords(
            attn_tp_rank=rank % attn_tp, attn_tp_size=attn_tp,
            moe_tp_rank=rank % moe_tp, moe_tp_size=moe_tp,
            ep_rank=rank // moe_tp, ep_size=self.ep,
            dp_rank=rank // attn_tp,
        )


def unit_range(size: int, units: int, rank: int, tp: int, *, replicate_units: bool = False,
               what: str = "tensor") -> tuple[int, int]:
    """[start, end) along a dim of ``size`` holding ``units`` equal units, for ``rank`` of ``tp``."""
    if tp == 1:
        return 0, size
    if units <= 0 or size % units:
        raise PlanError(f"{what}: {size} is not a whole number of {units} units")
    width = size // units
    if units % tp == 0:
        per = units // tp
        return rank * per * width, (rank + 1) * per * width
    if replicate_units and units < tp and tp % units == 0:
        unit = rank // (tp // units)
        return unit * width, (unit + 1) * width
    raise PlanError(
        f"{what}: {units} units (heads/rows) cannot be split evenly over TP {tp}",
        fix=f"choose a TP size that divides {units}",
    )


def expert_range(n_experts: int, ep_rank: int, ep_size: int) -> tuple[int, int]:
    """Contiguous [first, last+1) routed experts owned by ``ep_rank``."""
    if ep_size < 1 or n_experts % ep_size:
        raise PlanError(
            f"{n_experts} routed experts cannot be split evenly over EP {ep_size}",
            fix=f"choose parallel.ep dividing {n_experts}",
        )
    per = n_experts // ep_size
    return ep_rank * per, (ep_rank + 1) * per


def vocab_range(vocab: int, rank: int, tp: int) -> tuple[int, int]:
    """[start, end) vocabulary rows held by attention-TP ``rank`` (ceil chunks, last shorter)."""
    chunk = ceil_div(vocab, tp)
    start = min(vocab, rank * chunk)
    return start, min(vocab, start + chunk)


def _weight_slices(spec: TensorSpec, shape: tuple[int, ...], coords: ShardCoords) -> tuple[slice, ...] | None:
    full = tuple(slice(0, n) for n in shape)
    split = spec.split
    if split == "replicated":
        return full
    if split == "vocab":
        lo, hi = vocab_range(shape[0], coords.attn_tp_rank, coords.attn_tp_size)
        return (slice(lo, hi), *full[1:])
    if split == "expert":
        lo, hi = expert_range(spec.n_experts, coords.ep_rank, coords.ep_size)
        if spec.expert is None or not lo <= spec.expert < hi:
            return None
        kind = spec.inner
    else:
        kind = split
    dim = 0 if kind == "column" else 1
    rank, tp = coords.group(spec.group)
    lo, hi = unit_range(shape[dim], spec.units, rank, tp, replicate_units=spec.replicate_units,
                        what=f"{spec.name} ({'attention' if spec.group == 'attn' else 'MoE'} TP {tp})")
    out = list(full)
    out[dim] = slice(lo, hi)
    return tuple(out)


def shard_slice(spec: TensorSpec, *where: Any) -> tuple[slice, ...] | None:
    """The part of the full tensor ``spec`` that a rank holds.

    Call as ``shard_slice(spec, coords)`` or ``shard_slice(spec, shape, coords)``; the second form
    also checks that ``shape`` (e.g. read from a checkpoint header) is the shape the model
    config implies, raising :class:`~ascend.errors.CheckpointError` naming the tensor if not.

    Returns a tuple of slices (one per dim, step 1) into the full tensor, or None when the rank
    holds none of it (another EP rank's expert). FP8 scales follow their weight in block units
    and raise :class:`ShardAlignmentError` when the weight's split is not block-aligned.
    """
    if not isinstance(spec, TensorSpec):
        raise TypeError("shard_slice takes a TensorSpec; look names up with ascend.models.find_spec(args, name)")
    if len(where) == 2:
        shape, coords = where
        if tuple(shape) != spec.shape:
            raise CheckpointError(
                f"{spec.name} has shape {list(shape)} but the model config implies {list(spec.shape)}",
                fix="check that config.json belongs to these weights",
            )
    elif len(where) == 1:
        (coords,) = where
    else:
        raise TypeError("shard_slice(spec, coords) or shard_slice(spec, shape, coords)")
    if spec.scale_of is None:
        return _weight_slices(spec, spec.shape, coords)
    assert spec.block is not None and spec.weight_shape is not None
    weight_sl = _weight_slices(spec, spec.weight_shape, coords)
    if weight_sl is None:
        return None
    out = []
    for dim, (sl, block, size) in enumerate(zip(weight_sl, spec.block, spec.weight_shape)):
        if sl.start % block or (sl.stop % block and sl.stop != size):
            rank, tp = coords.group(spec.group)
            raise ShardAlignmentError(
                f"{spec.scale_of}: TP {tp} split of {size} {'rows' if dim == 0 else 'columns'} gives "
                f"[{sl.start}, {sl.stop}) on rank {rank}, which breaks the {block}-wide FP8 block alignment",
                fix="dequantize to BF16 (or requantize per shard), or choose a TP size whose slices are multiples of "
                f"{block}",
            )
        out.append(slice(sl.start // block, ceil_div(sl.stop, block)))
    return tuple(out)


def local_shape(spec: TensorSpec, coords: ShardCoords) -> tuple[int, ...] | None:
    """Shape of the rank's piece of ``spec`` (None when the rank holds none of it)."""
    sl = shard_slice(spec, coords)
    if sl is None:
        return None
    return tuple(s.stop - s.start for s in sl)


def fp8_alignment_problem(spec: TensorSpec, attn_tp: int, moe_tp: int, block: int = 128) -> str | None:
    """Why a TP split of weight ``spec`` breaks ``block``-wide FP8 blocks (None when it does not).

    A block-FP8 shard is valid without requantization only if the split dim divides evenly and
    each slice is a multiple of ``block`` (checkpoints.md §6.3). Replicated, vocab and
    unsplit tensors never have a problem.
    """
    dim = spec.split_dim
    if dim is None or spec.split == "vocab" or not spec.quantizable:
        return None
    tp = moe_tp if spec.group == "moe" else attn_tp
    if tp == 1:
        return None
    size = spec.shape[dim]
    try:
        lo, hi = unit_range(size, spec.units, 0, tp, replicate_units=spec.replicate_units, what=spec.name)
    except PlanError as err:
        return err.line()
    part = hi - lo
    if part % block:
        kind = "rows" if dim == 0 else "columns"
        group = "attention" if spec.group == "attn" else "MoE"
        return (
            f"{spec.name}: {group} TP {tp} split of {size} {kind} gives {part} per rank, "
            f"not a multiple of the {block}-wide FP8 block ({part / block:g} blocks)"
        )
    return None
