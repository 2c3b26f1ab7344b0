"""The recipe schema: typed, strict (unknown keys are errors), documented field by field.

Field names are part of the contract: add fields, never rename them. Each field's description
is user-facing: `tools/gen_recipe_docs.py` turns this module into docs/recipe-reference.md.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ascend.models.precision import PrecisionPolicy
from ascend.models.sharding import ParallelLayout

Family = Literal["glm_moe_dsa", "deepseek_v3", "deepseek_v32", "glm4_moe"]
Chip = Literal["ascend-910b", "ascend-a3", "ascend-950", "cpu"]
Precision = Literal["bf16", "fp8", "w8a8"]
SmokeCheck = Literal[
    "models",
    "chat",
    "stream",
    "max_tokens",
    "stop",
    "thinking",
    "tools",
    "tools_stream",
    "tools_no_args",
    "tools_multi_turn",
    "long_prompt",
    "concurrency",
    "bad_request",
]
ALL_SMOKE_CHECKS: list[str] = list(SmokeCheck.__args__)  # type: ignore[attr-defined]


class Section(BaseModel):
    """Base for every section: unknown keys are errors; a loaded recipe is frozen (settings derive from it once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TinySection(Section):
    """How `ascend tiny` generates the source checkpoint when `model.source: tiny`."""

    fp8: bool = Field(False, description="Write FP8 e4m3 block-quantized weights, like the published FP8 checkpoints.")
    seed: int = Field(0, description="Random seed; the checkpoint is deterministic for a seed.")
    layers: int | None = Field(None, ge=1, description="Number of decoder layers (default: the family's tiny default).")
    experts: int | None = Field(None, ge=1, description="Number of routed experts (default: the family's tiny default).")
    mtp: bool = Field(True, description="Include the MTP (next-n) layer.")
    scripted: bool = Field(
        False,
        description="Constructed weights with known behaviour (thinking, tool calls) instead of random ones.",
    )


class ModelSection(Section):
    """Which model, and where its source checkpoint comes from."""

    family: Family = Field(description="Model family (HF `model_type`).")
    id: str | None = Field(None, description="Hub id, e.g. `ZhipuAI/GLM-5-FP8` (ModelScope) or `zai-org/GLM-5-FP8` (Hugging Face).")
    source: Literal["modelscope", "huggingface", "local", "tiny"] = Field(
        "modelscope", description="Where the checkpoint comes from; `tiny` generates a tiny random one on CPU."
    )
    revision: str | None = Field(None, description="Hub revision; default `master` on ModelScope, `main` on Hugging Face.")
    path: str = Field(description="Directory of the source checkpoint (downloaded or generated there).")
    tiny: TinySection | None = Field(None, description="Options for `source: tiny`.")

    @property
    def resolved_revision(self) -> str | None:
        if self.revision:
            return self.revision
        return {"modelscope": "master", "huggingface": "main"}.get(self.source)


class HardwareSection(Section):
    """The cluster: chip kind, node count, ranks per node, node addresses."""

    chip: Chip = Field(description="Chip profile: ascend-910b (Atlas A2), ascend-a3 (dies), ascend-950, cpu.")
    nodes: int = Field(1, ge=1, description="Number of nodes (servers).")
    devices_per_node: int = Field(description="Ranks per node (on A3: dies, 16 per Atlas 800 A3).", ge=1)
    hosts: list[str] = Field(default_factory=list, description="One address per node, node 0 first (required for multi-node).")


class ParallelSection(Section):
    """Parallel layout. Attention TP = world / dp; MoE TP = world / ep (as in xLLM)."""

    dp: int = Field(1, ge=1, description="Attention data-parallel groups.")
    ep: int = Field(1, ge=1, description="Expert-parallel size.")


class PrecisionRule(Section):
    match: str = Field(description="Glob on tensor names, e.g. `*.mlp.experts.*`.")
    format: Precision = Field(description="Output format for matching tensors.")


class PrecisionSection(Section):
    default: Precision = Field("bf16", description="Format for tensors no rule matches.")
    rules: list[PrecisionRule] = Field(default_factory=list, description="First match wins; non-quantizable tensors always stay BF16.")
    w8a8_scheme: Literal["w8a8", "dynamic"] = Field(
        "w8a8", description="What `w8a8` means per tensor: `w8a8` = the family's engine practice (static attention "
        "from calibration, dynamic MLP/experts, some linears float); `dynamic` = every quantizable linear "
        "W8A8_DYNAMIC, no calibration (vllm-ascend; xLLM cannot read it).")


class CalibrationThresholds(Section):
    """Accuracy gate of calibrated static W8A8 (simulated on the CPU reference runtime, held-out tokens)."""

    layer_rel_l2: float | None = Field(
        0.02, gt=0, description="Largest allowed relative L2 error `‖y_w8a8 − y_float‖ / ‖y_float‖` of any decoder layer's output (same float input); null: not checked."
    )
    logits_kl: float | None = Field(
        0.05, gt=0, description="Largest allowed mean KL(float ‖ W8A8) of the final next-token distributions, in nats; null: not checked."
    )
    top1: float | None = Field(
        0.9, ge=0, le=1, description="Smallest allowed fraction of held-out tokens whose top-1 prediction is unchanged; null: not checked."
    )
    logits_rel_err: float | None = Field(
        0.1, gt=0, description="Largest allowed relative L2 error of the final logits; null: not checked."
    )


class CalibrationSection(Section):
    """Calibration of static W8A8 activations (`ascend calibrate`; docs/conversion.md, Calibration)."""

    samples: int = Field(64, ge=2, description="Calibration samples used (every 8th is held out for the accuracy report).")
    max_len: int = Field(512, ge=8, description="Tokens per sample at most (longer samples are cut).")
    file: str | None = Field(None, description='JSONL file, one `{"text": ...}` or `{"messages": [...]}` per line; null: the built-in mixed set.')
    smoothing_alpha: float | None = Field(
        0.5, ge=0, le=1, description="SmoothQuant migration strength α (`norm → linear`, `v → o`); null: no smoothing."
    )
    thresholds: CalibrationThresholds = Field(
        default_factory=CalibrationThresholds, description="Accuracy gate; a broken threshold exits 3 naming the worst layers."
    )
    device: Literal["cpu", "npu"] = Field(
        "cpu", description="Where `ascend convert` / `ascend run` calibrate: `cpu`, or `npu` through torch_npu (checked before any work); conversion itself runs on the CPU."
    )


class ConvertSection(Section):
    """How the source checkpoint is converted for serving."""

    output: str = Field(description="Output directory.")
    layout: Literal["hf", "sharded"] = Field("hf", description="`hf`: engines shard at load; `sharded`: one file per rank.")
    precision: PrecisionSection = Field(default_factory=PrecisionSection)
    mtp: Literal["keep", "drop", "export"] = Field("keep", description="MTP layer: keep in place, drop, or export as xLLM's draft model dir.")
    workers: int = Field(4, ge=1, description="Parallel conversion worker processes; peak RAM ≈ 0.3 GB + 0.5 GB per worker.")
    misaligned_fp8: Literal["refuse", "requantize"] = Field(
        "refuse", description="FP8 output whose TP split breaks 128-blocks: refuse, or requantize per shard."
    )
    calibration: CalibrationSection = Field(
        default_factory=CalibrationSection, description="Calibration of static W8A8 (used when the W8A8 scheme has static linears)."
    )


class SpeculativeSection(Section):
    method: Literal["mtp"] = Field("mtp", description="Speculative method; `mtp` uses the exported MTP draft model.")
    num_tokens: int = Field(1, ge=1, le=8, description="Speculative tokens per step.")


class GraphSection(Section):
    """ACL graph mode for decode (xLLM `--enable_graph`; off by default, as in xLLM)."""

    enable: bool = Field(False, description="Capture decode steps as ACL graphs (`--enable_graph`); graph memory is not modelled by `ascend plan`.")
    decode_batch_limit: int | None = Field(None, ge=1, description="Largest decode batch run as a graph, above it eager (`acl_graph_decode_batch_size_limit`, v0.10.x `graph_decode_batch_size_limit`); default xLLM's 16.")


class EplbSection(Section):
    """Expert-parallel load balancing (xLLM `--enable_eplb`)."""

    enable: bool = Field(False, description="Move hot experts between devices at run time (`--enable_eplb`).")
    redundant_experts: int = Field(1, ge=0, description="Extra routed experts held by every device (`--redundant_experts_num`); `ascend plan` counts their weights.")
    update_interval: int = Field(1000, ge=1, description="Steps between expert placement updates (`--eplb_update_interval`).")


class ServeSection(Section):
    """How the engine is launched."""

    engine: Literal["xllm", "cpu"] = Field("xllm", description="`xllm` on Ascend; `cpu` is the xLLM-compatible CPU engine.")
    version: str = Field("0.10", description="xLLM version whose flag table the commands follow: `0.9`, `0.9.1`, `0.10`, `0.10.1`, `jd-main`, `0.11` / `main` (docs/serving.md).")
    binary: str = Field("xllm", description="Engine binary (name on PATH or absolute path; `XLLM_BIN` overrides).")
    port: int = Field(18000, ge=1, le=65535, description="HTTP port of rank 0.")
    master_port: int = Field(9748, ge=1, le=65535, description="Port of the master node address used by ranks to rendezvous.")
    max_model_len: int = Field(32768, ge=1, description="Longest sequence (prompt + output) in tokens.")
    max_seqs: int = Field(32, ge=1, description="Sequences per batch (`--max_seqs_per_batch`).")
    max_tokens_per_batch: int = Field(8192, ge=1, description="Tokens per scheduler step (`--max_tokens_per_batch`).")
    block_size: int = Field(128, ge=1, description="KV-cache block size in tokens.")
    memory_utilization: float = Field(0.85, gt=0, le=1, description="Fraction of device memory the engine may use.")
    tool_call_parser: str | None = Field(None, description="Tool-call parser name (explicit; `auto` is fatal for some families).")
    reasoning_parser: str | None = Field(None, description="Reasoning parser name.")
    speculative: SpeculativeSection | None = Field(None, description="Speculative decoding (MTP).")
    env: dict[str, str] = Field(default_factory=dict, description="Environment overrides for every rank (win over generated values).")
    extra_args: list[str] = Field(default_factory=list, description="Extra engine flags, appended verbatim (`--flag=value`).")
    device_ips: dict[str, list[str]] = Field(
        default_factory=dict, description="Per host, the NPU device IPs (for generating the rank table)."
    )
    rank_table: str | None = Field(None, description="Absolute path of the rank table: an existing file is used (validated; never rewritten, only copied to nodes that lack it), else the generated table is written there by the node scripts; default `/tmp/ascend-recipes/<name>/ranktable.json`.")
    startup_timeout_s: int | None = Field(None, ge=1, description="Readiness timeout; default sized from the model.")
    image: str | None = Field(
        None, description="Container image for `--emit kubernetes` (serve and convert): CANN, torch_npu, xLLM and this "
        "package with `ascend` on PATH (docs/kubernetes.md).")
    graph: GraphSection = Field(default_factory=GraphSection, description="ACL graph mode for decode.")
    schedule_overlap: bool = Field(False, description="Overlap scheduling with the model step (`--enable_schedule_overlap`; xLLM's default is off).")
    eplb: EplbSection = Field(default_factory=EplbSection, description="Expert load balancing.")
    numactl_cores_per_rank: int | None = Field(None, ge=1, description="Pin each rank to its own cores: `numactl -C $((D*N))-$((D*N+N-1))` for local device D (GLM-5 guide: 40); off by default.")
    preload: str | None = Field(None, description="Absolute path of a memory allocator every rank preloads (`LD_PRELOAD`, e.g. libjemalloc.so.2); the script refuses to start when it is missing.")
    npu_init: bool = Field(False, description="The node script calls `torch_npu.npu.set_device(i)` for every device before starting the ranks (the GLM-5 guide's step after a reboot).")


class SmokeSection(Section):
    """What the smoke suite checks, and the thresholds it enforces."""

    checks: list[SmokeCheck] = Field(default_factory=lambda: list(ALL_SMOKE_CHECKS), description="Checks to run.")
    concurrency: int = Field(8, ge=1, description="Parallel streaming requests in the `concurrency` check.")
    max_tokens: int = Field(32, ge=1, description="Completion length used by the checks.")
    thresholds: dict[Literal["ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "min_tokens_per_s"], float] = Field(
        default_factory=dict, description="Latency/throughput limits; a check fails when exceeded."
    )


class BenchWorkload(Section):
    """One prompt shape of the sweep: every concurrency level runs once per workload."""

    input_len: int = Field(1024, ge=1, description="Prompt length in tokens, chat template included (not used with `dataset`).")
    output_len: int = Field(128, ge=1, description="Completion length in tokens (`max_tokens`; with `ignore_eos` the server generates exactly this many).")


class BenchSLO(Section):
    """Per-request service-level objectives; a request meeting all that are set is *good* (counts for goodput)."""

    ttft_ms: float | None = Field(None, gt=0, description="Time to first token at most this (ms).")
    tpot_ms: float | None = Field(None, gt=0, description="Time per output token at most this (ms).")
    e2e_ms: float | None = Field(None, gt=0, description="End-to-end request latency at most this (ms).")


class BenchThresholds(Section):
    """Pass/fail limits per level (`ascend bench` exits 3 naming each broken one)."""

    min_output_tokens_per_s: float | None = Field(None, gt=0, description="Output-token throughput of the level at least this.")
    min_requests_per_s: float | None = Field(None, gt=0, description="Completed requests per second of the level at least this.")
    min_goodput_ratio: float | None = Field(None, gt=0, le=1, description="Fraction of requests meeting every `slo` at least this.")
    max_ttft_p99_ms: float | None = Field(None, gt=0, description="99th-percentile time to first token at most this (ms).")
    max_tpot_p99_ms: float | None = Field(None, gt=0, description="99th-percentile time per output token at most this (ms).")
    max_itl_p99_ms: float | None = Field(None, gt=0, description="99th-percentile inter-token (inter-chunk) latency at most this (ms).")
    max_e2e_p99_ms: float | None = Field(None, gt=0, description="99th-percentile end-to-end latency at most this (ms).")
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Fraction of failed requests at most this (default: none may fail).")


class BenchSection(Section):
    """`ascend bench`: a serving benchmark swept over concurrency levels and workloads (docs/bench-and-eval.md)."""

    enabled: bool = Field(False, description="Run the `bench` stage in `ascend run` (`ascend bench RECIPE` runs regardless).")
    api: Literal["chat", "completions"] = Field("chat", description="Streamed endpoint: `/v1/chat/completions` or `/v1/completions`.")
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 4, 16], min_length=1, description="Concurrency levels: requests kept in flight at once."
    )
    workloads: list[BenchWorkload] = Field(default_factory=lambda: [BenchWorkload()], min_length=1, description="Prompt shapes to sweep.")
    num_prompts: int | None = Field(None, ge=1, description="Requests per level (default: 4 x the level's concurrency, at least 8).")
    lengths: Literal["fixed", "random"] = Field(
        "fixed", description="`fixed`: every prompt/completion has the workload's length; `random`: uniform within ± `range_ratio`."
    )
    range_ratio: float = Field(0.25, ge=0, lt=1, description="Spread of `lengths: random` (as vLLM's `--random-range-ratio`).")
    dataset: str | None = Field(None, description="JSONL prompt file instead of random tokens: one object per line with `prompt` (text) or `messages` (chat), optional `max_tokens`.")
    ignore_eos: bool = Field(True, description="Ask the server to generate exactly `output_len` tokens (`ignore_eos`, an xLLM/vLLM extension).")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra fields for every request, e.g. `chat_template_kwargs: {enable_thinking: false}`.")
    warmup: int = Field(1, ge=0, description="Unmeasured requests sent first (they also check the endpoint answers).")
    seed: int = Field(0, description="Seed of the random prompts and lengths (a rerun sends the same prompts).")
    timeout_s: float = Field(600.0, gt=0, description="Per-request timeout in seconds; a request over it counts as an error.")
    slo: BenchSLO = Field(default_factory=BenchSLO)
    thresholds: BenchThresholds = Field(default_factory=BenchThresholds)
    thresholds_at: list[int] = Field(
        default_factory=list, description="Concurrency levels the thresholds apply to (default: every level)."
    )

    @model_validator(mode="after")
    def _thresholds_at_swept_levels(self) -> "BenchSection":
        missing = sorted(set(self.thresholds_at) - set(self.concurrency))
        if missing:  # else those thresholds would silently never be checked
            raise ValueError(f"thresholds_at {missing} are not in concurrency {self.concurrency}")
        return self


class EvalTask(Section):
    """One accuracy task: a ModelScope dataset (downloaded by id at run time) or a local file."""

    name: str = Field(description="Task name shown in reports, e.g. `gsm8k`.")
    kind: Literal["math", "choice"] = Field(
        description="`math`: GSM8K-style, the last number of the reply is compared with the gold number; "
        "`choice`: MMLU / C-Eval-style, the option letter of the reply is compared with the gold letter."
    )
    dataset: str | None = Field(None, description="ModelScope dataset id, e.g. `modelscope/gsm8k`, `modelscope/mmlu`, `modelscope/ceval-exam`.")
    subset: str | None = Field(None, description="Dataset subset (folder), e.g. `main` (GSM8K) or a subject (MMLU, C-Eval).")
    split: str = Field("test", description="Split whose data files are read (`test`; C-Eval: `val`, its test answers are not public).")
    path: str | None = Field(None, description="Local JSONL / JSON / CSV file instead of a dataset (`package:NAME` = a file shipped with ascend).")
    samples: int | None = Field(100, ge=1, description="Items evaluated (the first N); null = all.")
    threshold: float | None = Field(None, ge=0, le=1, description="Minimum accuracy (0-1); below it the eval fails (exit 3). null = report only.")

    @model_validator(mode="after")
    def _one_source(self) -> "EvalTask":
        if (self.dataset is None) == (self.path is None):
            raise ValueError(f"task {self.name!r} needs exactly one of dataset (ModelScope id) or path (local file)")
        return self


class EvalSection(Section):
    """Accuracy on standard tasks through the served endpoint (`ascend eval`, the `eval` stage)."""

    enabled: bool = Field(False, description="Run the eval stage in `ascend run`.")
    thinking: bool = Field(False, description="Thinking mode for every request (`chat_template_kwargs.enable_thinking`).")
    max_tokens: int = Field(1024, ge=1, description="Completion limit per question (thinking needs more).")
    concurrency: int = Field(4, ge=1, description="Parallel requests.")
    timeout_s: float = Field(600, gt=0, description="Per-request timeout in seconds.")
    tasks: list[EvalTask] = Field(default_factory=list, description="Tasks to run.")


class Recipe(Section):
    """One deployment: model, hardware, layout, conversion, serving, smoke test."""

    name: str = Field(description="Short identifier.")
    description: str = Field("", description="One line shown by `ascend recipes`.")
    model: ModelSection
    hardware: HardwareSection
    parallel: ParallelSection = Field(default_factory=ParallelSection)
    convert: ConvertSection
    serve: ServeSection = Field(default_factory=ServeSection)
    smoke: SmokeSection = Field(default_factory=SmokeSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    # Set by the loader, not YAML keys: the file, and where each key's value came from.
    _source_path: str | None = None
    _origins: Any = None

    @property
    def source_path(self) -> str | None:
        """The YAML file this recipe was loaded from (None when built in code)."""
        return self._source_path

    @cached_property
    def layout(self) -> ParallelLayout:
        """The parallel layout (world, dp, attention TP = world / dp, EP, MoE TP = world / ep)."""
        return ParallelLayout.from_recipe(self)

    @cached_property
    def precision(self) -> PrecisionPolicy:
        """The output format of every tensor (``convert.precision``)."""
        return PrecisionPolicy.from_recipe(self)
