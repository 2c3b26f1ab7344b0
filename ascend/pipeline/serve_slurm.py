"""The serve stage with ``--scheduler slurm``: the recipe's serve job submitted to Slurm
(``ascend.cluster.slurm_job``) instead of ranks started here; the job becomes ``ctx.service``."""

from __future__ import annotations

import time
from typing import Any

from ascend.pipeline.report import StageResult
from ascend.pipeline.stages import RunContext, StageFailed


def serve_on_slurm(ctx: RunContext, dep: Any) -> StageResult:
    from ascend.cluster.slurm_job import JobFailed, SlurmService
    from ascend.serve.launch import readiness_timeout
    from ascend.serve.preflight import require_checkpoint

    r = ctx.recipe
    # The checkpoint is on the filesystem the nodes share; the ports are the node's, not this machine's.
    require_checkpoint(r, dep.model_dir, ref=r.source_path or r.name)
    service = SlurmService(r, dep, ctx.run_dir, sbatch_args=ctx.sbatch_args, on_submit=lambda job: submitted(ctx, job),
                           timeout_s=readiness_timeout(dep.model_dir, configured=r.serve.startup_timeout_s))
    t0 = time.monotonic()
    try:
        with ctx.beat(f"serve: Slurm job waiting for readiness (script {service.script})", service.progress):
            ctx.service = ctx.stack.enter_context(service)
    except JobFailed as err:  # the report keeps the job id and its output's tail
        raise StageFailed(StageResult("serve", "failed", err.line(), details={
            "slurm_job": service.job_id, "output": str(service.output), "output_tail": err.tail})) from None
    logs = service.log_dir / f"slurm-{service.job_id}"
    return StageResult(
        "serve", "ok",
        f"Slurm job {service.job_id} serving {service.served_model!r} at {service.base_url}, ready in "
        f"{time.monotonic() - t0:.1f} s; output {service.output}, rank logs in {logs}",
        details={"slurm_job": service.job_id, "base_url": service.base_url, "model": service.served_model,
                 "script": str(service.script), "output": str(service.output), "logs": str(logs)},
    )


def submitted(ctx: RunContext, job: str) -> None:
    """The job id on disk at once: whatever happens to this process, `scancel` knows what to cancel."""
    ctx.write_record("serve", {"slurm_job": job})
    ctx.log(f"  serve: submitted Slurm job {job}")
