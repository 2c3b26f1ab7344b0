"""One rank's xLLM command line (reference/xllm.md §2, §3): every flag checked against the
version's dialect before it is emitted, since an unknown flag aborts xLLM at start-up."""

from __future__ import annotations

from typing import Any

from ascend.errors import ServeError
from ascend.recipe.schema import ServeSection
from ascend.serve.xllm_flags import DEVICE_SELECTION, has_flag


def flag(argv: list[str], dialect: str, name: str, value: Any) -> None:
    if not has_flag(dialect, name):
        raise ServeError(f"internal: flag --{name} does not exist in xLLM {dialect}")  # generator bug guard
    if isinstance(value, bool):
        value = "true" if value else "false"
    argv.append(f"--{name}={value}")


def check_extra_args(extra: list[str], dialect: str) -> None:
    """``serve.extra_args`` must be ``--name=value`` flags this dialect knows (gflags' ``--noflag`` too)."""
    for arg in extra:
        if not arg.startswith("--"):
            raise ServeError(f"serve.extra_args: {arg!r} is not a --flag=value argument", fix="write it as --name=value")
        name = arg[2:].split("=", 1)[0]
        if name.startswith("no") and not has_flag(dialect, name) and has_flag(dialect, name[2:]):
            name = name[2:]  # gflags' --noflag form of a boolean
        if not has_flag(dialect, name):
            raise ServeError(f"serve.extra_args: --{name} does not exist in xLLM {dialect} (unknown flags abort xLLM)",
                             fix="remove it, or use the spelling of this version (see docs/serving.md)")


def rank_argv(
    binary: str, dialect: str, serve: ServeSection, *, rank: int, local_device: int, world: int, dp: int, ep: int,
    model_dir: str, served: str, master: str, host: str | None, reasoning: str | None, tool: str | None,
    draft_dir: str | None, rank_table: str | None,
) -> tuple[list[str], dict[str, str]]:
    """(argv, rank-specific environment) of global ``rank`` on its node's ``local_device``."""
    argv, env = [binary], {}
    flag(argv, dialect, "model", model_dir)
    flag(argv, dialect, "model_id", served)
    flag(argv, dialect, "port", serve.port + rank)
    flag(argv, dialect, "master_node_addr", master)
    flag(argv, dialect, "nnodes", world)
    flag(argv, dialect, "node_rank", rank)
    if host is not None:
        flag(argv, dialect, "host", host)
    select = DEVICE_SELECTION[dialect]
    if select.mode == "devices":
        flag(argv, dialect, "devices", f"npu:{local_device}")
    elif select.mode == "device_id":
        flag(argv, dialect, "device_id", local_device)
    else:  # device = node_rank % visible count: expose exactly this rank's device
        env["ASCEND_RT_VISIBLE_DEVICES"] = str(local_device)
    flag(argv, dialect, "dp_size", dp)
    flag(argv, dialect, "ep_size", ep)
    flag(argv, dialect, "communication_backend", "hccl")
    flag(argv, dialect, "max_memory_utilization", serve.memory_utilization)
    flag(argv, dialect, "max_tokens_per_batch", serve.max_tokens_per_batch)
    flag(argv, dialect, "max_seqs_per_batch", serve.max_seqs)
    flag(argv, dialect, "block_size", serve.block_size)
    if reasoning:
        flag(argv, dialect, "reasoning_parser", reasoning)
    if tool:
        flag(argv, dialect, "tool_call_parser", tool)
    if draft_dir is not None:
        flag(argv, dialect, "draft_model", draft_dir)
        flag(argv, dialect, "num_speculative_tokens", serve.speculative.num_tokens)
        if select.draft_devices:  # its default would put every draft on npu:0
            flag(argv, dialect, "draft_devices", f"npu:{local_device}")
    if rank_table:
        flag(argv, dialect, "rank_tablefile", rank_table)
    argv.extend(serve.extra_args)
    return argv, env
