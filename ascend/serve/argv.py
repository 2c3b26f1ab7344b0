"""One rank's xLLM command line (reference/xllm.md §2, §3): every flag and value checked against
the version's flag table before it is emitted, since an unknown flag aborts xLLM at start-up."""

from __future__ import annotations

from typing import Any

from ascend.errors import ServeError
from ascend.recipe.schema import ServeSection
from ascend.serve.xllm_flags import XllmVersion


def flag(argv: list[str], version: XllmVersion, name: str, value: Any, *, where: str = "generated command") -> None:
    version.check(name, value, where=where)
    if isinstance(value, bool):
        value = "true" if value else "false"
    argv.append(f"--{name}={value}")


def graph_limit_flag(version: XllmVersion) -> str:
    """The decode graph batch cap's name: v0.10.x renamed it (reference/xllm.md §1); v0.9.0 has neither,
    and checking the ``acl_`` name then names the versions that do have it."""
    return "graph_decode_batch_size_limit" if version.has("graph_decode_batch_size_limit") else "acl_graph_decode_batch_size_limit"


def cpu_binding(cores_per_rank: int | None, local_device: int) -> list[str]:
    """``numactl -C`` prefix pinning local device D's rank to cores D*N..D*N+N-1 (GLM-5 guide:
    ``numactl -C $((DEVICE*40))-$((DEVICE*40+39))``, reference/xllm.md §8.1); empty when off."""
    if not cores_per_rank:
        return []
    first = local_device * cores_per_rank
    return ["numactl", "-C", f"{first}-{first + cores_per_rank - 1}"]


def check_extra_args(extra: list[str], version: XllmVersion) -> None:
    """``serve.extra_args`` must be ``--name=value`` flags of this version with legal values
    (gflags' bare ``--flag`` / ``--noflag`` forms of a boolean too)."""
    for arg in extra:
        if not arg.startswith("--"):
            raise ServeError(f"serve.extra_args: {arg!r} is not a --flag=value argument", fix="write it as --name=value")
        name, eq, value = arg[2:].partition("=")
        if not eq:  # a bare boolean: --flag or --noflag
            negated = name.startswith("no") and not version.has(name) and version.has(name[2:])
            name, value = (name[2:], "false") if negated else (name, "true")
            if version.has(name) and version.flags[name].type != "bool":
                raise ServeError(f"serve.extra_args: --{name} needs a value", fix=f"write it as --{name}=value")
        version.check(name, value, where="serve.extra_args")


def rank_argv(
    binary: str, version: XllmVersion, serve: ServeSection, *, rank: int, local_device: int, world: int, dp: int, ep: int,
    model_dir: str, served: str, master: str, host: str | None, reasoning: str | None, tool: str | None,
    draft_dir: str | None, rank_table: str | None,
) -> tuple[list[str], dict[str, str]]:
    """(argv, rank-specific environment) of global ``rank`` on its node's ``local_device``."""
    argv, env = [binary], {}
    flag(argv, version, "model", model_dir)
    flag(argv, version, "model_id", served)
    flag(argv, version, "port", serve.port + rank)
    flag(argv, version, "master_node_addr", master)
    flag(argv, version, "nnodes", world)
    flag(argv, version, "node_rank", rank)
    if host is not None:
        flag(argv, version, "host", host)
    select = version.device_selection
    if select == "devices":
        flag(argv, version, "devices", f"npu:{local_device}")
    elif select == "device_id":
        flag(argv, version, "device_id", local_device)
    else:  # device = node_rank % visible count: expose exactly this rank's device
        env["ASCEND_RT_VISIBLE_DEVICES"] = str(local_device)
    flag(argv, version, "dp_size", dp)
    flag(argv, version, "ep_size", ep)
    flag(argv, version, "communication_backend", "hccl")
    flag(argv, version, "max_memory_utilization", serve.memory_utilization)
    flag(argv, version, "max_tokens_per_batch", serve.max_tokens_per_batch)
    flag(argv, version, "max_seqs_per_batch", serve.max_seqs)
    flag(argv, version, "block_size", serve.block_size)
    if serve.schedule_overlap:
        flag(argv, version, "enable_schedule_overlap", True, where="serve.schedule_overlap")
    if serve.graph.enable:
        flag(argv, version, "enable_graph", True, where="serve.graph.enable")
        if serve.graph.decode_batch_limit is not None:
            flag(argv, version, graph_limit_flag(version), serve.graph.decode_batch_limit,
                 where="serve.graph.decode_batch_limit")
    if serve.eplb.enable:
        flag(argv, version, "enable_eplb", True, where="serve.eplb.enable")
        flag(argv, version, "redundant_experts_num", serve.eplb.redundant_experts, where="serve.eplb.redundant_experts")
        flag(argv, version, "eplb_update_interval", serve.eplb.update_interval, where="serve.eplb.update_interval")
    if reasoning:
        flag(argv, version, "reasoning_parser", reasoning)
    if tool:
        flag(argv, version, "tool_call_parser", tool)
    if draft_dir is not None:
        flag(argv, version, "draft_model", draft_dir)
        flag(argv, version, "num_speculative_tokens", serve.speculative.num_tokens)
        if version.needs_draft_devices:  # its default would put every draft on npu:0
            flag(argv, version, "draft_devices", f"npu:{local_device}")
    if rank_table:
        flag(argv, version, "rank_tablefile", rank_table)
    argv.extend(serve.extra_args)
    return argv, env
