"""Every rank's xLLM command line and environment, from a recipe (reference/xllm.md §2, §3, §8).

xLLM runs one process per NPU (an A3 die): ``--nnodes`` is the total number of processes,
``--node_rank`` the global rank, rank 0 alone serves HTTP. Flags differ between releases and an
unknown flag aborts the binary, so everything emitted here is checked against the dialect table
in :mod:`ascend.serve.xllm_flags`. The same generator produces ``ascend-xllm-cpu`` commands for
``serve.engine: cpu`` (same flags, CPU-side environment).

The result, :class:`Deployment`, is plain data: ``ascend serve --dry-run --json`` prints it and
:mod:`ascend.serve.launch` runs it.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend.errors import ServeError
from ascend.serve import ranktable
from ascend.serve.xllm_flags import DEVICE_SELECTION, dialect_of, has_flag, resolve_parser

CPU_ENGINE_BINARY = "ascend-xllm-cpu"
DEFAULT_MASTER_PORT = 19888  # xLLM's own default for --master_node_addr
HCCL_IF_BASE_PORT = "43432"  # xLLM launch / multi-machine docs
XLLM_DEFAULT_EP_BUFFER_MB = 512  # xLLM's EP/TP domain buffer when HCCL_BUFFSIZE is unset (mapping_npu.cpp)

# Environment of the documented xLLM GLM-5 / DeepSeek deployments (reference/xllm.md §8.3,
# reference/deployments.md pain points 1–3). Every key can be overridden by serve.env.
NPU_ENV_COMMON = {
    "HCCL_CONNECT_TIMEOUT": "300",
    "HCCL_EXEC_TIMEOUT": "300",
    "HCCL_IF_BASE_PORT": HCCL_IF_BASE_PORT,
    "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",
    "NPU_MEMORY_FRACTION": "0.96",
    "OMP_NUM_THREADS": "12",
    "ALLOW_INTERNAL_FORMAT": "1",
    "INF_NAN_MODE_ENABLE": "1",
    "ATB_WORKSPACE_MEM_ALLOC_ALG_TYPE": "3",
    "ATB_WORKSPACE_MEM_ALLOC_GLOBAL": "1",
    "ATB_LAYER_INTERNAL_TENSOR_REUSE": "1",
    "ATB_LLM_ENABLE_AUTO_TRANSPOSE": "0",
    "ATB_CONVERT_NCHW_TO_AND": "1",
    "ATB_LAUNCH_KERNEL_WITH_TILING": "1",
    "ATB_OPERATION_EXECUTE_ASYNC": "2",
    "ATB_CONTEXT_WORKSPACE_SIZE": "0",
}
NPU_ENV_SINGLE_NODE = {"HCCL_OP_EXPANSION_MODE": "AIV"}
# Multi-node: AIV expansion must be off (GLM-5 two-node doc) and connecting takes longer (CI uses 1200).
NPU_ENV_MULTI_NODE = {"HCCL_CONNECT_TIMEOUT": "1200"}
NPU_UNSET_MULTI_NODE = ["HCCL_OP_EXPANSION_MODE"]
CPU_ENV = {"OMP_NUM_THREADS": "1"}  # ranks share the host's cores


@dataclass
class RankCommand:
    rank: int
    node: int
    local_device: int
    argv: list[str]
    env: dict[str, str]

    def to_json(self) -> dict:
        return {"rank": self.rank, "node": self.node, "argv": list(self.argv), "env": dict(self.env)}


@dataclass
class Deployment:
    """What to run where. ``env`` of a rank holds only the variables set on top of the host's."""

    engine: str
    dialect: str
    served_model: str
    model_dir: str
    port: int
    hosts: list[str]
    devices_per_node: int
    ranks: list[RankCommand]
    scripts: dict[str, str] = field(default_factory=dict)
    rank_table: dict | None = None
    rank_table_path: str | None = None
    unset_env: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def node_ranks(self, node: int) -> list[RankCommand]:
        return [r for r in self.ranks if r.node == node]

    def base_url(self, host: str | None = None) -> str:
        """Rank 0's HTTP root: ``hosts[0]`` across nodes, 127.0.0.1 on one node (the CPU engine binds there)."""
        return f"http://{host or (self.hosts[0] if len(self.hosts) > 1 else '127.0.0.1')}:{self.port}"

    def to_json(self) -> dict:
        return {
            "ranks": [r.to_json() for r in self.ranks],
            "scripts": dict(self.scripts),
            "rank_table": self.rank_table,
        }


def _get(obj: Any, dotted: str, default: Any = None) -> Any:
    """``recipe.a.b`` for pydantic models, dataclasses or dicts; ``default`` when absent or None."""
    for part in dotted.split("."):
        if obj is None:
            return default
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return default if obj is None else obj


DRAFT_SUBDIR = "mtp"  # where ascend convert (mtp: export) writes the draft: <output>/mtp


def draft_model_dir(model_dir: str) -> str:
    """Where ``convert.mtp: export`` puts the MTP draft model xLLM's ``--draft_model`` loads."""
    return str(Path(model_dir) / DRAFT_SUBDIR)


def served_model_dir(recipe: Any) -> str:
    """The checkpoint the engine loads: the conversion output if the recipe converts, else the source."""
    out = _get(recipe, "convert.output") or _get(recipe, "model.path")
    if not out:
        raise ServeError("the recipe names no checkpoint to serve", fix="set convert.output or model.path")
    return str(Path(out).expanduser().absolute())


def hccl_buffsize_mb(chip: str, *, hidden: int, experts: int, top_k: int, shared_experts: int, ep: int,
                     max_bs: int) -> int:
    """MB of HCCL buffer MoE dispatch/combine needs (reference/ascend-ops.md §1.13).

    A3 (fullmesh_v1): 2·(L·bs·EP·Align512(Align32(2H)+64) + (K+shared)·bs·Align512(2H)) bytes;
    A2 (fullmesh): 2·(bs·EP·min(L, K)·H·2 B + 2 MB), with L = experts per rank, bs = tokens per
    rank per step.
    """
    def align(x: int, a: int) -> int:
        return (x + a - 1) // a * a

    local = max(1, experts // ep)
    if chip == "ascend-a3":
        need = 2 * (local * max_bs * ep * align(align(2 * hidden, 32) + 64, 512)
                    + (top_k + shared_experts) * max_bs * align(2 * hidden, 512))
    else:
        need = 2 * (max_bs * ep * min(local, top_k) * hidden * 2 + 2 * 2**20)
    return math.ceil(need / 2**20)


def _moe_dims(recipe: Any, model_config: dict | None) -> dict | None:
    cfg = model_config
    if cfg is None:
        path = _get(recipe, "model.path")
        cfg_file = Path(str(path)) / "config.json" if path else None
        if cfg_file is not None and cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
        elif _get(recipe, "model.id"):
            from ascend.models.catalog import published_config  # published config.json by hub id

            cfg = published_config(str(_get(recipe, "model.id")))
    if not cfg or "n_routed_experts" not in cfg and "num_experts" not in cfg:
        return None
    return {
        "hidden": int(cfg["hidden_size"]),
        "experts": int(cfg.get("n_routed_experts") or cfg.get("num_experts")),
        "top_k": int(cfg.get("num_experts_per_tok", 8)),
        "shared_experts": int(cfg.get("n_shared_experts") or 0),
        "model_type": cfg.get("model_type"),
    }


def _flag(argv: list[str], dialect: str, name: str, value: Any) -> None:
    if not has_flag(dialect, name):
        raise ServeError(f"internal: flag --{name} does not exist in xLLM {dialect}")  # generator bug guard
    if isinstance(value, bool):
        value = "true" if value else "false"
    argv.append(f"--{name}={value}")


def build_deployment(
    recipe: Any,
    *,
    model_config: dict | None = None,
    device_ips: list[list[str]] | None = None,
    super_device_ids: list[list[str]] | None = None,
    model_type: str | None = None,
) -> Deployment:
    """Argv and environment of every rank, launch scripts per node and the rank table.

    ``model_config``: the model's config.json as a dict, for the HCCL buffer formula and the
    model_type behind ``auto`` parsers (read from ``model.path`` when omitted and present).
    ``device_ips`` / ``super_device_ids``: per node, per device; default ``serve.device_ips``.
    """
    engine = _get(recipe, "serve.engine", "xllm")
    dialect = dialect_of(_get(recipe, "serve.version", "0.10"))
    nodes = int(_get(recipe, "hardware.nodes", 1))
    per_node = int(_get(recipe, "hardware.devices_per_node", 1))
    hosts = list(_get(recipe, "hardware.hosts", []) or [])
    if nodes > 1 and len(hosts) != nodes:
        raise ServeError(f"hardware.hosts lists {len(hosts)} hosts for {nodes} nodes", fix="give one IP per node")
    if not hosts:
        hosts = ["127.0.0.1"]
    world = nodes * per_node
    dp, ep = int(_get(recipe, "parallel.dp", 1)), int(_get(recipe, "parallel.ep", 1))
    if world % dp or world % ep:
        raise ServeError(f"parallel.dp={dp} and parallel.ep={ep} must divide the world size {world}")
    port = int(_get(recipe, "serve.port", 18000))
    master_port = int(_get(recipe, "serve.master_port", DEFAULT_MASTER_PORT))
    if master_port == port:  # only rank 0 binds its --port (xllm.cpp); the master port must differ
        raise ServeError(f"serve.master_port {master_port} equals serve.port", fix="pick another serve.master_port")
    master = f"{hosts[0] if nodes > 1 else '127.0.0.1'}:{master_port}"
    model_dir = served_model_dir(recipe)
    served = str(_get(recipe, "serve.model_id", "") or Path(model_dir).name)
    dims = _moe_dims(recipe, model_config)
    mtype = model_type or (dims or {}).get("model_type") or _get(recipe, "model.family", "")
    chip = _get(recipe, "hardware.chip", "cpu")

    tool = resolve_parser("tool_call", _get(recipe, "serve.tool_call_parser"), mtype, dialect)
    reasoning = resolve_parser("reasoning", _get(recipe, "serve.reasoning_parser"), mtype, dialect)
    spec_tokens = int(_get(recipe, "serve.speculative.num_tokens", 0) or 0)
    spec_method = str(_get(recipe, "serve.speculative.method", "") or "").lower()
    if spec_tokens > 0 and spec_method not in ("mtp", ""):
        raise ServeError(f"serve.speculative.method {spec_method!r} is not supported for xLLM here",
                         fix="use method: mtp (xLLM loads the exported MTP draft via --draft_model)")
    if spec_tokens > 0 and _get(recipe, "convert.mtp", "export") != "export":
        raise ServeError("serve.speculative needs the MTP draft exported for xLLM",
                         why=f"convert.mtp is {_get(recipe, 'convert.mtp')!r}",
                         fix="set convert.mtp: export, or drop serve.speculative")

    # Rank table: multi-node xLLM deployments only.
    table, table_path = None, None
    if engine == "xllm" and nodes > 1:
        table, table_path = _rank_table(recipe, chip, hosts, per_node, device_ips, super_device_ids)

    binary = CPU_ENGINE_BINARY if engine == "cpu" else str(_get(recipe, "serve.binary", "xllm"))
    extra = [str(a) for a in (_get(recipe, "serve.extra_args", []) or [])]
    _check_extra_args(extra, dialect)

    # Environment shared by all ranks.
    common: dict[str, str] = {}
    unset: list[str] = []
    warnings: list[str] = []
    user_env = {str(k): str(v) for k, v in (_get(recipe, "serve.env", {}) or {}).items()}
    if engine == "xllm":
        common.update(NPU_ENV_COMMON)
        if nodes > 1:
            common.update(NPU_ENV_MULTI_NODE)
            unset = list(NPU_UNSET_MULTI_NODE)
        else:
            common.update(NPU_ENV_SINGLE_NODE)
        if dims and ep > 1:
            max_bs = int(_get(recipe, "serve.max_seqs", 32)) * (spec_tokens + 1)
            need = hccl_buffsize_mb(chip, ep=ep, max_bs=max_bs, **{k: dims[k] for k in ("hidden", "experts", "top_k", "shared_experts")})
            if need > XLLM_DEFAULT_EP_BUFFER_MB:
                common["HCCL_BUFFSIZE"] = str(math.ceil(need * 1.1 / 8) * 8)  # 10% headroom, 8 MB steps
            given = user_env.get("HCCL_BUFFSIZE", "")
            if given.isdigit() and int(given) < need:
                warnings.append(f"serve.env HCCL_BUFFSIZE={given} MB is below the ~{need} MB MoE dispatch may need "
                                f"(EP {ep}, {max_bs} tokens per rank per step; reference/ascend-ops.md §1.13); "
                                "if ranks die with 'HCCL_BUFFSIZE is too SMALL' or 'MTE out of range', raise it")
    else:
        common.update(CPU_ENV)
    unset = [u for u in unset if u not in user_env]

    select = DEVICE_SELECTION[dialect]
    ranks: list[RankCommand] = []
    for rank in range(world):
        node, local = divmod(rank, per_node)
        argv = [binary]
        _flag(argv, dialect, "model", model_dir)
        _flag(argv, dialect, "model_id", served)
        _flag(argv, dialect, "port", port + rank)
        _flag(argv, dialect, "master_node_addr", master)
        _flag(argv, dialect, "nnodes", world)
        _flag(argv, dialect, "node_rank", rank)
        if nodes > 1:
            _flag(argv, dialect, "host", hosts[node])
        env = dict(common)
        if select.mode == "devices":
            _flag(argv, dialect, "devices", f"npu:{local}")
        elif select.mode == "device_id":
            _flag(argv, dialect, "device_id", local)
        else:  # device = node_rank % visible count: expose exactly this rank's device
            env["ASCEND_RT_VISIBLE_DEVICES"] = str(local)
        if engine == "xllm" and nodes > 1:
            env["HCCL_IF_IP"] = hosts[node]
        _flag(argv, dialect, "dp_size", dp)
        _flag(argv, dialect, "ep_size", ep)
        _flag(argv, dialect, "communication_backend", "hccl")
        for key, flag in (("serve.memory_utilization", "max_memory_utilization"),
                          ("serve.max_tokens_per_batch", "max_tokens_per_batch"),
                          ("serve.max_seqs", "max_seqs_per_batch"),
                          ("serve.block_size", "block_size")):
            value = _get(recipe, key)
            if value is not None:
                _flag(argv, dialect, flag, value)
        if reasoning:
            _flag(argv, dialect, "reasoning_parser", reasoning)
        if tool:
            _flag(argv, dialect, "tool_call_parser", tool)
        if spec_tokens > 0:
            _flag(argv, dialect, "draft_model", draft_model_dir(model_dir))
            _flag(argv, dialect, "num_speculative_tokens", spec_tokens)
            if select.draft_devices:  # its default would put every draft on npu:0
                _flag(argv, dialect, "draft_devices", f"npu:{local}")
        if table_path:
            _flag(argv, dialect, "rank_tablefile", table_path)
        argv.extend(extra)
        env.update(user_env)
        ranks.append(RankCommand(rank, node, local, argv, env))

    dep = Deployment(engine, dialect, served, model_dir, port, hosts, per_node, ranks,
                     rank_table=table, rank_table_path=table_path, unset_env=unset, warnings=warnings)
    dep.scripts = {str(n): node_script(dep, n, recipe_name=str(_get(recipe, "name", ""))) for n in range(nodes)}
    return dep


def _check_extra_args(extra: list[str], dialect: str) -> None:
    for arg in extra:
        if not arg.startswith("--"):
            raise ServeError(f"serve.extra_args: {arg!r} is not a --flag=value argument", fix="write it as --name=value")
        name = arg[2:].split("=", 1)[0]
        if name.startswith("no") and not has_flag(dialect, name) and has_flag(dialect, name[2:]):
            name = name[2:]  # gflags' --noflag form of a boolean
        if not has_flag(dialect, name):
            raise ServeError(f"serve.extra_args: --{name} does not exist in xLLM {dialect} (unknown flags abort xLLM)",
                             fix="remove it, or use the spelling of this version (see docs/serving.md)")


def device_info_from_dir(base: str | Path, hosts: list[str], per_node: int) -> tuple[list[list[str]], list[list[str]] | None]:
    """Device IPs (and A3 super device ids) from saved tool outputs, one folder per host:
    ``<base>/<host>/hccn_<dev>.txt`` (``hccn_tool -i <dev> -ip -g``) and optionally
    ``<base>/<host>/spod_<dev>.txt`` (``npu-smi info -t spod-info -i <npu> -c <chip>``)."""
    dirs = [Path(base) / h for h in hosts]
    ips = [ranktable.read_node_device_ips(d, per_node) for d in dirs]
    sdids = None
    if all((d / "spod_0.txt").is_file() for d in dirs):
        sdids = [[ranktable.parse_spod_info((d / f"spod_{i}.txt").read_text(), source=str(d / f"spod_{i}.txt"))[0]
                  for i in range(per_node)] for d in dirs]
    return ips, sdids


def _rank_table(recipe, chip, hosts, per_node, device_ips, super_device_ids) -> tuple[dict | None, str]:
    plan = {"chip": chip, "hosts": hosts, "devices_per_node": per_node}
    given = _get(recipe, "serve.rank_table")
    if given and Path(str(given)).is_file():
        path = Path(str(given)).absolute()
        return ranktable.load_rank_table(path, **plan), str(path)
    ips = device_ips
    if ips is None:
        given_ips = _get(recipe, "serve.device_ips") or {}
        if given_ips:
            missing = [h for h in hosts if h not in given_ips]
            if missing:
                raise ServeError(f"serve.device_ips has no entry for host {missing[0]}",
                                 fix="give every host in hardware.hosts its list of device IPs")
            ips = [given_ips[h] for h in hosts]
    path = str(Path(str(given or f"ranktable-{_get(recipe, 'name', 'deployment')}.json")).absolute())
    if not ips:
        return None, path  # commands still print; launching refuses until the file exists (see node_script)
    ips = [[str(ip) for ip in node] for node in ips]
    for node, node_ips in enumerate(ips):
        if len(node_ips) != per_node:
            raise ServeError(f"serve.device_ips[{node}] lists {len(node_ips)} devices, hardware.devices_per_node is {per_node}")
    table = ranktable.build_rank_table(chip, hosts, ips, super_device_ids=super_device_ids)
    ranktable.validate_rank_table(table, source="generated rank table", **plan)
    return table, path


def node_script(dep: Deployment, node: int, *, recipe_name: str = "") -> str:
    """A bash script that starts ``node``'s ranks, one log file each, and stops them all together."""
    ranks = dep.node_ranks(node)
    common = {k: v for k, v in ranks[0].env.items() if all(r.env.get(k) == v for r in ranks)}
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        f"# {recipe_name or 'deployment'}: node {node} of {len(dep.hosts)} ({dep.hosts[node]}), "
        f"ranks {ranks[0].rank}-{ranks[-1].rank} of {dep.world_size}; generated by `ascend serve --dry-run`",
        "set -eo pipefail",
    ]
    if dep.engine == "xllm":
        lines += ["for f in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/nnal/atb/set_env.sh; do",
                  '  [ -f "$f" ] && source "$f"', "done"]
    lines += [f"unset {name}" for name in dep.unset_env]
    lines += [f"export {k}={q(v)}" for k, v in common.items()]
    if dep.rank_table is None and dep.rank_table_path:
        lines += [f"[ -f {q(dep.rank_table_path)} ] || {{ echo {q('missing rank table ' + dep.rank_table_path + ': set serve.device_ips or serve.rank_table and regenerate')} >&2; exit 2; }}"]
    if dep.rank_table is not None and dep.rank_table_path:
        lines += [f"# the same rank table on every node (never reuse a stale host file)",
                  f"rm -f {q(dep.rank_table_path)}",
                  f"cat > {q(dep.rank_table_path)} <<'RANKTABLE'",
                  json.dumps(dep.rank_table, indent=2), "RANKTABLE"]
    lines += ['LOG_DIR="${LOG_DIR:-logs}"', 'mkdir -p "$LOG_DIR"', "pids=()"]
    for r in ranks:
        own = " ".join(f"{k}={q(v)}" for k, v in r.env.items() if k not in common)
        cmd = " ".join(q(a) for a in r.argv)
        lines.append(f'{(own + " ") if own else ""}{cmd} > "$LOG_DIR/rank-{r.rank}.log" 2>&1 &')
        lines.append("pids+=($!)")
    lines += [
        'stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; sleep 15; kill -KILL "${pids[@]}" 2>/dev/null || true; }',
        "trap 'stop; exit 130' INT TERM",
        'echo "started ${#pids[@]} ranks; logs in $LOG_DIR"',
        "set +e",
        "wait -n; code=$?",
        'echo "a rank exited with code $code; stopping the others" >&2',
        "stop",
        "exit $code",
    ]
    return "\n".join(lines) + "\n"
