"""The environment every rank starts with: the documented xLLM deployments' variables, the HCCL
buffer, and the user's ``serve.env`` on top (reference/xllm.md §8.3, reference/deployments.md
pain points 1–3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ascend.models import ModelArgs
from ascend.plan.memory import hccl_buffsize
from ascend.recipe.settings import Settings
from ascend.serve.xllm_flags import CPU_ENGINE_MAX_MODEL_LEN_ENV, CPU_ENGINE_VERSION_ENV

HCCL_IF_BASE_PORT = "43432"  # xLLM launch / multi-machine docs

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
    "ATB_CONVERT_NCHW_TO_ND": "1",  # the v0.9.1 GLM-5 guide misspells it ..._TO_AND (xllm.md §8.3)
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
class Environment:
    """Variables set on every rank (``common``), removed from the host's (``unset``), and warnings."""

    common: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rank_environment(settings: Settings, args: ModelArgs | None) -> Environment:
    """The shared environment of a deployment; ``serve.env`` wins over every generated value."""
    serve, layout = settings.serve, settings.layout
    env = Environment()
    user = dict(serve.env)
    if serve.preload:  # jemalloc / tcmalloc, as xLLM's GLM-5 guides preload (reference/xllm.md §8.3)
        env.common["LD_PRELOAD"] = serve.preload
    if serve.engine != "xllm":
        env.common.update(CPU_ENV)
        env.common[CPU_ENGINE_VERSION_ENV] = serve.version  # it accepts exactly this version's flags
        env.common[CPU_ENGINE_MAX_MODEL_LEN_ENV] = str(serve.max_model_len)  # xLLM has no such flag
        return env
    env.common.update(NPU_ENV_COMMON)
    if layout.nodes > 1:
        env.common.update(NPU_ENV_MULTI_NODE)
        env.unset = [name for name in NPU_UNSET_MULTI_NODE if name not in user]
    else:
        env.common.update(NPU_ENV_SINGLE_NODE)
    if args is not None:
        buff = hccl_buffsize(settings, args)  # the same figure `ascend plan` shows
        if buff.source == "computed":
            env.common["HCCL_BUFFSIZE"] = str(buff.mb)
        elif buff.source == "serve.env" and buff.mb < buff.need_mb:
            env.warnings.append(
                f"serve.env HCCL_BUFFSIZE={buff.mb} MB is below the ~{buff.need_mb} MB MoE dispatch may need "
                f"(EP {layout.ep}, {serve.max_seqs * (settings.speculative_tokens + 1)} tokens per rank per step; "
                "reference/ascend-ops.md §1.13); if ranks die with 'HCCL_BUFFSIZE is too SMALL' or "
                "'MTE out of range', raise it")
    return env
