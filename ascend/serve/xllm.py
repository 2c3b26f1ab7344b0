"""Every rank's xLLM command line and environment, from a recipe (reference/xllm.md §2, §3, §8).

xLLM runs one process per NPU (an A3 die): ``--nnodes`` is the total number of processes,
``--node_rank`` the global rank, rank 0 alone serves HTTP. The same generator produces
``ascend-xllm-cpu`` commands for ``serve.engine: cpu`` (same flags, CPU-side environment).
The parts: :mod:`.argv` (flags, checked against the version's dialect), :mod:`.environment`
(variables and the HCCL buffer), :mod:`.ranktable` (multi-node rank tables) and :mod:`.script`
(the per-node launch script).

The result, :class:`Deployment`, is plain data: ``ascend serve --dry-run --json`` prints it and
:mod:`ascend.serve.launch` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ascend.checkpoint.files import DRAFT_SUBDIR
from ascend.errors import AscendError, ServeError
from ascend.models import ModelArgs, model_args_for_recipe
from ascend.recipe.schema import Recipe
from ascend.recipe.settings import Settings
from ascend.serve.argv import check_extra_args, cpu_binding, rank_argv
from ascend.serve.environment import rank_environment
from ascend.serve.ranktable import rank_table_for
from ascend.serve.script import node_script
from ascend.serve.xllm_flags import resolve_parser, xllm_version

CPU_ENGINE_BINARY = "ascend-xllm-cpu"


@dataclass
class RankCommand:
    rank: int
    node: int
    local_device: int
    argv: list[str]
    env: dict[str, str]
    wrapper: list[str] = field(default_factory=list)  # runs argv (CPU binding: numactl -C …)

    def to_json(self) -> dict:
        out = {"rank": self.rank, "node": self.node, "argv": list(self.argv), "env": dict(self.env)}
        if self.wrapper:
            out["wrapper"] = list(self.wrapper)
        return out


@dataclass
class Deployment:
    """What to run where. ``env`` of a rank holds only the variables set on top of the host's."""

    engine: str
    version: str  # serve.version: which xLLM flag table the argv follows
    served_model: str
    model_dir: str
    port: int
    hosts: list[str]
    devices_per_node: int
    ranks: list[RankCommand]
    scripts: dict[str, str] = field(default_factory=dict)
    rank_table: dict | None = None
    rank_table_path: str | None = None
    rank_table_given: bool = False  # read from the user's serve.rank_table: checked, never rewritten
    unset_env: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    preload: str | None = None  # serve.preload: the script checks it exists before starting
    npu_init: bool = False  # serve.npu_init: the script initialises every NPU first

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


def draft_model_dir(model_dir: str) -> str:
    """Where ``convert.mtp: export`` puts the MTP draft model xLLM's ``--draft_model`` loads."""
    return str(Path(model_dir) / DRAFT_SUBDIR)


def served_model_dir(recipe: Recipe) -> str:
    """The checkpoint the engine loads: the conversion output of the recipe."""
    return str(Path(recipe.convert.output).expanduser().absolute())


def _model_args(recipe: Recipe) -> ModelArgs | None:
    """The model's facts when any config is reachable (for the HCCL buffer and ``auto`` parsers);
    commands still print without them."""
    try:
        return model_args_for_recipe(recipe.model)
    except AscendError:
        return None


def _check_launch_options(serve) -> None:
    if serve.preload is not None and not Path(serve.preload).is_absolute():
        raise ServeError(f"serve.preload {serve.preload!r} is not an absolute path", why="LD_PRELOAD resolves names per host",
                         fix="give the library's full path, e.g. /usr/lib/aarch64-linux-gnu/libjemalloc.so.2")
    if serve.npu_init and serve.engine != "xllm":
        raise ServeError("serve.npu_init initialises NPUs, but serve.engine is cpu", fix="remove serve.npu_init")
    if serve.graph.decode_batch_limit is not None and not serve.graph.enable:
        raise ServeError("serve.graph.decode_batch_limit has no effect without graph mode",
                         fix="set serve.graph.enable: true, or remove the limit")


def _graph_warnings(serve, speculative_tokens: int) -> list[str]:
    """GLM-5.2 guide (reference/xllm.md §3.6): with MTP the decode graph cap must stay within 32 / (k + 1)."""
    limit = serve.graph.decode_batch_limit
    if serve.graph.enable and speculative_tokens and limit is not None and limit > 32 // (speculative_tokens + 1):
        cap = 32 // (speculative_tokens + 1)
        return [f"serve.graph.decode_batch_limit {limit} exceeds 32 / (num_speculative_tokens + 1) = {cap}, "
                "the cap xLLM's GLM-5.2 guide gives for graph capture with MTP"]
    return []


def build_deployment(
    recipe: Recipe,
    *,
    args: ModelArgs | None = None,
    device_ips: list[list[str]] | None = None,
    super_device_ids: list[list[str]] | None = None,
    super_pod_ids: list[str] | None = None,
) -> Deployment:
    """Argv and environment of every rank, launch scripts per node and the rank table.

    ``args``: the model's facts (default: from the recipe's model section, when reachable).
    ``device_ips`` / ``super_device_ids``: per node, per device; default ``serve.device_ips``.
    ``super_pod_ids``: per node, the A3 SuperPoD it sits in (default: all in pod ``"0"``).
    """
    settings = Settings.from_recipe(recipe)
    serve, layout = settings.serve, settings.layout.check()
    hosts = list(recipe.hardware.hosts)
    if layout.nodes > 1 and len(hosts) != layout.nodes:
        raise ServeError(f"hardware.hosts lists {len(hosts)} hosts for {layout.nodes} nodes", fix="give one IP per node")
    hosts = hosts or ["127.0.0.1"]
    if serve.master_port == serve.port:  # only rank 0 binds its --port (xllm.cpp); the master port must differ
        raise ServeError(f"serve.master_port {serve.master_port} equals serve.port", fix="pick another serve.master_port")
    if settings.speculative_tokens and recipe.convert.mtp != "export":
        raise ServeError("serve.speculative needs the MTP draft exported for xLLM",
                         why=f"convert.mtp is {recipe.convert.mtp!r}",
                         fix="set convert.mtp: export, or drop serve.speculative")
    _check_launch_options(serve)
    version = xllm_version(serve.version)
    check_extra_args(serve.extra_args, version)
    args = args if args is not None else _model_args(recipe)
    model_type = args.family if args is not None else recipe.model.family
    tool = resolve_parser("tool_call", serve.tool_call_parser, model_type, version)
    reasoning = resolve_parser("reasoning", serve.reasoning_parser, model_type, version)

    multi_node_xllm = serve.engine == "xllm" and layout.nodes > 1
    table, table_path, table_given = (rank_table_for(recipe, device_ips, super_device_ids, super_pod_ids)
                                      if multi_node_xllm else (None, None, False))
    env = rank_environment(settings, args)
    binary = CPU_ENGINE_BINARY if serve.engine == "cpu" else serve.binary
    model_dir = served_model_dir(recipe)
    served = Path(model_dir).name
    master = f"{hosts[0] if layout.nodes > 1 else '127.0.0.1'}:{serve.master_port}"

    ranks: list[RankCommand] = []
    for rank in range(layout.world):
        node, local = layout.node_of(rank)
        argv, own_env = rank_argv(
            binary, version, serve, rank=rank, local_device=local, world=layout.world, dp=layout.dp, ep=layout.ep,
            model_dir=model_dir, served=served, master=master, host=hosts[node] if layout.nodes > 1 else None,
            reasoning=reasoning, tool=tool, rank_table=table_path,
            draft_dir=draft_model_dir(model_dir) if settings.speculative_tokens else None,
        )
        rank_env = {**env.common, **own_env}
        if multi_node_xllm:
            rank_env["HCCL_IF_IP"] = hosts[node]
        rank_env.update(serve.env)
        ranks.append(RankCommand(rank, node, local, argv, rank_env, cpu_binding(serve.numactl_cores_per_rank, local)))

    warnings = env.warnings + _graph_warnings(serve, settings.speculative_tokens)
    dep = Deployment(serve.engine, version.name, served, model_dir, serve.port, hosts, layout.devices_per_node, ranks,
                     rank_table=table, rank_table_path=table_path, rank_table_given=table_given, unset_env=env.unset, warnings=warnings,
                     preload=serve.preload, npu_init=serve.npu_init)
    dep.scripts = {str(n): node_script(dep, n, recipe_name=recipe.name) for n in range(layout.nodes)}
    return dep
