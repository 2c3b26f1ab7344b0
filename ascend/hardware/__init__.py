"""Chip profiles: memory per device, devices per node, which weight formats the chip computes in.

Facts from ``reference/ascend-ops.md`` §3 (FP8 support) and §5 (memory, devices per node) and
``reference/deployments.md`` (ranks = dies on A3). Device memory is taken as GiB: ``npu-smi``
reports 65536 MB of HBM for the 64 GB parts (the 96 GB Ascend 950DT is assumed to follow suit,
unverified).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace

from ascend.errors import PlanError

GiB = 1024**3


@dataclass(frozen=True)
class ChipProfile:
    """One accelerator kind as the planner sees it.

    Attributes:
        name: profile name used in recipes (``hardware.chip``).
        product: what it is, in words.
        memory_bytes: memory per rank (per NPU, per die on A3).
        devices_per_node: ranks per standard node (None = any, e.g. cpu).
        formats: weight formats the chip computes in ("bf16", "w8a8", "fp8").
        engine_reserve_bytes: memory per rank the engine and runtime take besides weights,
            KV cache, activations and HCCL buffers (runtime context, operator workspaces,
            graph pools) — an estimate, see docs/planner.md.
        collective: "hccl" (NPUs) or "gloo" (cpu; no device buffers).
        rank_table_version: HCCL rank-table format for multi-node ("1.0" A2, "1.2" A3, "2.0" A5).
        sources: where the facts come from.
    """

    name: str
    product: str
    memory_bytes: int
    devices_per_node: int | None
    formats: frozenset[str]
    engine_reserve_bytes: int
    collective: str = "hccl"
    rank_table_version: str | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB

    def supports(self, fmt: str) -> bool:
        """Whether the chip computes with weights in ``fmt`` ("bf16", "w8a8", "fp8")."""
        return fmt in self.formats


_PROFILES: dict[str, ChipProfile] = {
    p.name: p
    for p in (
        ChipProfile(
            name="ascend-910b",
            product="Atlas 800 A2 (Ascend 910B): 8 NPUs × 64 GB per node",
            memory_bytes=64 * GiB,
            devices_per_node=8,
            formats=frozenset({"bf16", "w8a8"}),
            engine_reserve_bytes=2 * GiB,
            rank_table_version="1.0",
            sources=("ascend-ops.md §3 (no FP8 on A2)", "ascend-ops.md §5 (64 GB × 8)"),
        ),
        ChipProfile(
            name="ascend-a3",
            product="Atlas 800 A3 (Ascend 910C): 16 dies × 64 GB per node (8 packages × 2 dies)",
            memory_bytes=64 * GiB,
            devices_per_node=16,
            formats=frozenset({"bf16", "w8a8"}),
            engine_reserve_bytes=2 * GiB,
            rank_table_version="1.2",
            sources=("ascend-ops.md §3 (no FP8 on A3)", "ascend-ops.md §5 (64 GB per die, 16 dies)"),
        ),
        ChipProfile(
            name="ascend-950",
            product="Ascend 950DT (A5): 8 NPUs × 96 GB per node, FP8 capable",
            memory_bytes=96 * GiB,
            devices_per_node=8,
            formats=frozenset({"bf16", "w8a8", "fp8"}),
            engine_reserve_bytes=2 * GiB,
            rank_table_version="2.0",
            sources=("ascend-ops.md §3 (W8A8FP8 / MXFP8 on 950)", "ascend-ops.md §5 (96 GB × 8)"),
        ),
        ChipProfile(
            name="cpu",
            product="host CPU (reference runtime, CPU engine); memory = host RAM shared by all ranks",
            memory_bytes=0,  # filled from the host at lookup time
            devices_per_node=None,
            formats=frozenset({"bf16", "w8a8", "fp8"}),  # emulated in fp32 by the reference runtime
            engine_reserve_bytes=GiB // 2,
            collective="gloo",
            sources=("host RAM via sysconf",),
        ),
    )
}

CHIPS: tuple[str, ...] = tuple(_PROFILES)


def host_memory_bytes() -> int:
    """Physical RAM of this host (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def chip_profile(name: str, *, ranks_per_node: int = 1) -> ChipProfile:
    """The profile called ``name`` (PlanError with "did you mean" on unknown names).

    For ``cpu`` the memory per rank is the host RAM divided by ``ranks_per_node`` (the ranks of
    one node share it).
    """
    profile = _PROFILES.get(name)
    if profile is None:
        close = difflib.get_close_matches(name, CHIPS, n=1, cutoff=0.4)
        raise PlanError(
            f"unknown chip {name!r}",
            fix=(f"did you mean {close[0]!r}? " if close else "") + f"known chips: {', '.join(CHIPS)}",
        )
    if name == "cpu":
        profile = replace(profile, memory_bytes=host_memory_bytes() // max(1, ranks_per_node))
    return profile


__all__ = ["CHIPS", "GiB", "ChipProfile", "chip_profile", "host_memory_bytes"]
