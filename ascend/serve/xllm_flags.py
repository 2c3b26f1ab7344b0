"""xLLM's command-line flags per version dialect, as data (reference/xllm.md §1, §3, §4).

A dialect is the ``major.minor`` of an xLLM release line: ``"0.9"`` (v0.9.x), ``"0.10"`` (v0.10.x
and jd-opensource main) and ``"0.11"`` (xLLM-AI main). xLLM parses flags with gflags, where an
unknown ``--flag`` aborts the process, so the command generator asks :func:`has_flag` before it
emits anything and the CPU engine accepts exactly the union of these flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from ascend.errors import ServeError

DIALECTS = ("0.9", "0.10", "0.11")
ALL = frozenset(DIALECTS)


@dataclass(frozen=True)
class Flag:
    """One gflags flag: ``kind`` is bool | int | float | str; ``dialects`` where it exists."""

    name: str
    kind: str
    default: object
    dialects: frozenset = ALL


@dataclass(frozen=True)
class DeviceSelection:
    """How a rank is pinned to its device in a dialect (reference/xllm.md §1)."""

    mode: str  # "devices": --devices=npu:N | "device_id": --device_id=N | "visible": ASCEND_RT_VISIBLE_DEVICES=N
    draft_devices: bool  # --draft_devices must name the device too (0.9 defaults it to npu:0)


DEVICE_SELECTION = {
    "0.9": DeviceSelection("devices", draft_devices=True),
    "0.10": DeviceSelection("device_id", draft_devices=False),
    # xLLM-AI main: no device flag; device = node_rank % visible device count
    "0.11": DeviceSelection("visible", draft_devices=False),
}


def _f(name: str, kind: str, default: object, dialects=ALL) -> Flag:
    return Flag(name, kind, default, frozenset(dialects))


# Flags relevant to LLM serving (reference/xllm.md §3; DiT/VLM/Rec groups are left out on purpose:
# the generator never emits them and the CPU engine has nothing to do with them).
FLAGS: dict[str, Flag] = {
    f.name: f
    for f in [
        # model / device / parsers (§3.1)
        _f("model", "str", ""),
        _f("model_id", "str", ""),
        _f("backend", "str", ""),
        _f("task", "str", "generate"),
        _f("devices", "str", "npu:0", {"0.9", "0.10"}),  # deprecated in 0.10, removed in 0.11
        _f("device_id", "int", -1, {"0.10"}),
        _f("reasoning_parser", "str", ""),
        _f("tool_call_parser", "str", ""),
        _f("use_cpp_chat_template", "bool", True),
        # service / distributed (§3.2)
        _f("host", "str", ""),
        _f("port", "int", 8010),
        _f("master_node_addr", "str", "127.0.0.1:19888"),
        _f("nnodes", "int", 1),
        _f("node_rank", "int", 0),
        _f("num_threads", "int", 8),
        _f("max_concurrent_requests", "int", 200),
        _f("num_request_handling_threads", "int", 4),
        _f("num_response_handling_threads", "int", 4),
        _f("max_reconnect_count", "int", 40),
        _f("health_check_interval_ms", "int", 3000),
        _f("config_json_file", "str", "", {"0.10", "0.11"}),
        # parallelism (§3.3)
        _f("dp_size", "int", 1),
        _f("ep_size", "int", 1),
        _f("cp_size", "int", 1),
        _f("communication_backend", "str", "hccl"),
        _f("enable_prefill_sp", "bool", False, {"0.9", "0.10"}),
        _f("enable_multi_stream_parallel", "bool", False),
        _f("micro_batch_num", "int", 1),
        _f("enable_dp_balance", "bool", False),
        # KV cache / memory (§3.4)
        _f("max_memory_utilization", "float", 0.8),
        _f("block_size", "int", 128),
        _f("max_cache_size", "int", 0),
        _f("kv_cache_dtype", "str", "auto"),
        _f("enable_prefix_cache", "bool", True),
        # scheduler (§3.5)
        _f("max_tokens_per_batch", "int", 10240),
        _f("max_seqs_per_batch", "int", 1024),  # 200 on 0.11 (default only; never relied on)
        _f("enable_schedule_overlap", "bool", False),
        _f("enable_chunked_prefill", "bool", True),
        _f("max_tokens_per_chunk_for_prefill", "int", -1),
        _f("priority_strategy", "str", "fcfs"),
        _f("use_mix_scheduler", "bool", False, {"0.9", "0.10"}),
        _f("enable_mix_batch", "bool", True, {"0.11"}),
        # speculative decoding (§3.6)
        _f("draft_model", "str", ""),
        _f("draft_devices", "str", "npu:0", {"0.9", "0.10"}),  # "" (= target devices) from 0.10
        _f("num_speculative_tokens", "int", 0),
        _f("speculative_algorithm", "str", "MTP"),
        # execution / graph (§3.7)
        _f("enable_graph", "bool", False),
        _f("enable_graph_mode_decode_no_padding", "bool", False),
        _f("max_tokens_for_graph_mode", "int", 2048),
        _f("acl_graph_decode_batch_size_limit", "int", 16, {"0.9", "0.11"}),
        _f("graph_decode_batch_size_limit", "int", 16, {"0.10"}),
        _f("enable_shm", "bool", False),
        _f("random_seed", "int", -1),
        # NPU kernels (§3.8)
        _f("npu_kernel_backend", "str", "AUTO"),
        _f("enable_fused_mc2", "int", -1),
        # EP / EPLB / rank table (§3.9)
        _f("expert_parallel_degree", "int", 0),
        _f("enable_eplb", "bool", False),
        _f("redundant_experts_num", "int", 1),
        _f("eplb_update_interval", "int", 1000),
        _f("eplb_update_threshold", "float", 0.8, {"0.9", "0.10"}),
        _f("rank_tablefile", "str", ""),
        # dumps (§2)
        _f("enable_dump_config_json", "bool", False, {"0.10", "0.11"}),
        _f("dump_config_json_file", "str", "xllm_config.json", {"0.10", "0.11"}),
        # added on xLLM-AI main (§1)
        _f("enable_mega_moe", "bool", False, {"0.11"}),
        _f("enable_flashcomm1", "bool", False, {"0.11"}),
        _f("flashcomm1_min_prefill_tokens", "int", 8192, {"0.11"}),
        _f("enable_json_object_output", "bool", True, {"0.11"}),
        _f("enable_adaptive_speculative_decode", "bool", False, {"0.11"}),
        _f("enable_mtp_draft_body_tp1", "bool", False, {"0.11"}),
        _f("disable_graph_warmup", "bool", False, {"0.11"}),
    ]
}

# Parser names xLLM resolves at startup; an unknown name is LOG(FATAL) (§4).
TOOL_CALL_PARSERS = frozenset(
    {"qwen25", "qwen2", "qwen3", "qwen35", "qwen3_coder", "kimi_k2", "deepseekv3", "deepseekv32",
     "deepseekv4", "glm45", "glm47", "glm5", "auto"}
)
REASONING_PARSERS = frozenset(
    {"deepseek-r1", "deepseek-v3", "glm45", "glm47", "glm5", "deepseek-v4", "kimi", "kimi_k25",
     "qwen3", "qwen35", "qwen3-thinking", "qwen35-thinking", "step3", "auto"}
)

# What `auto` resolves to, per dialect, keyed by config.json model_type (§4). A model_type missing
# here makes `auto` fatal at startup; a value that is not a registered name is just as fatal.
TOOL_CALL_AUTO: dict[str, dict[str, str]] = {
    "0.9": {"deepseek_v3": "deepseekv3", "deepseek_v32": "deepseekv32", "kimi_k2": "kimi_k2"},
    "0.10": {"deepseek_v3": "deepseekv3", "deepseek_v32": "deepseekv32", "kimi_k2": "kimi_k2"},
    "0.11": {"deepseek_v3": "deepseekv3", "deepseek_v32": "deepseekv32", "kimi_k2": "kimi_k2",
             "glm_moe_dsa": "glm5", "glm_moe_dsa_mtp": "glm5"},
}
REASONING_AUTO: dict[str, dict[str, str]] = {
    d: {"glm4_moe": "glm45", "deepseek_v32": "deepseekv32"} for d in DIALECTS
}

# Readiness line rank 0 prints once HTTP is up (§5); matched case-insensitively.
READY_LINE = "Brpc Server started on port"


def dialect_of(version: object) -> str:
    """``"0.10"``, ``"0.10.1"``, ``0.1``-as-float mishaps → the dialect key, or a ServeError."""
    text = str(version).strip().lstrip("v")
    parts = text.split(".")
    key = ".".join(parts[:2]) if len(parts) >= 2 else text
    if key not in DIALECTS:
        raise ServeError(
            f"serve.version {version!r} is not a known xLLM flag dialect",
            fix=f"use one of {', '.join(DIALECTS)} (quote it in YAML: version: \"0.10\")",
        )
    return key


def has_flag(dialect: str, name: str) -> bool:
    flag = FLAGS.get(name)
    return flag is not None and dialect in flag.dialects


def resolve_parser(kind: str, name: str | None, model_type: str, dialect: str) -> str | None:
    """Check a parser name the way xLLM will at startup; refuse names that would abort it.

    ``kind`` is ``"tool_call"`` or ``"reasoning"``. Returns the name to pass (``None`` = no flag).
    """
    if not name:
        return None
    known = TOOL_CALL_PARSERS if kind == "tool_call" else REASONING_PARSERS
    key = f"serve.{kind}_parser"
    if name not in known:
        raise ServeError(
            f"{key}: xLLM has no {kind.replace('_', ' ')} parser {name!r} (it would abort at startup)",
            fix=f"use one of {', '.join(sorted(known - {'auto'}))}",
        )
    if name == "auto":
        table = (TOOL_CALL_AUTO if kind == "tool_call" else REASONING_AUTO)[dialect]
        target = table.get(model_type)
        if target is None or target not in known:
            raise ServeError(
                f"{key}: 'auto' is fatal on xLLM {dialect} for model_type {model_type!r}",
                why="xLLM maps auto only for "
                + (", ".join(f"{k}->{v}" for k, v in sorted(table.items())) or "nothing"),
                fix=f"name the parser explicitly, e.g. --set {key}=<name>",
            )
    return name
