"""`ascend run`: plan -> source (fetch / tiny / local) -> convert -> verify -> serve -> smoke -> bench -> eval -> stop.

Each stage is a library function of its own package; this package only orders them, skips
work that is already complete for the recipe, reports one line per stage and writes the run
report (``report.json``, ``report.txt``, ``report.html``) into the run directory (default ``runs/<recipe name>``)::

    from ascend.pipeline import run_pipeline
    report, error = run_pipeline(load_recipe("tiny/glm5-cpu"))

Dependencies between stages: convert needs the source, verify and serve need the converted
output, smoke and bench need the running service. After a failure only the stages that need its artifact
are ``blocked`` (with ``--keep-going``); ``--from`` assumes the earlier artifacts exist from a
previous run.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ascend.errors import AscendError, CheckFailed, RecipeError
from ascend.pipeline.report import STAGES, RunReport, StageResult
from ascend.pipeline.stages import STAGE_FUNCS, RunContext, StageFailed, stop_service
from ascend.procs import dir_lock

ORDER = [s for s in STAGES if s != "stop"]
NEEDS = {"convert": "source", "verify": "convert", "serve": "convert", "smoke": "serve", "bench": "serve", "eval": "serve"}
ALIASES = {"fetch": "source", "tiny": "source"}
SCHEDULERS = ("local", "slurm")


def stage_name(name: str, option: str) -> str:
    name = ALIASES.get(name, name)
    if name not in ORDER:
        raise RecipeError(f"{option} {name!r} is not a stage", fix=f"use one of: {', '.join(ORDER)} (fetch = source)")
    return name


def default_run_dir(recipe: Any) -> Path:
    return Path("runs") / recipe.name


def run_pipeline(
    recipe: Any,
    *,
    run_dir: str | Path | None = None,
    start: str = "plan",
    until: str | None = None,
    keep_going: bool = False,
    echo: Callable[[StageResult], None] = lambda r: None,
    log: Callable[[str], None] = lambda s: None,
    hold: Callable[[RunContext], None] | None = None,
    progress: bool = False,
    scheduler: str = "local",
    sbatch_args: list[str] | None = None,
) -> tuple[RunReport, AscendError | None]:
    """Run the stages from ``start`` to ``until`` (default: the last); never leaves a service running.

    ``echo`` gets each stage's result as soon as it is known; ``hold`` (if given) is called while
    the service is up after the last stage (``--until serve`` serves until interrupted).
    ``scheduler="slurm"`` submits the serve stage as a Slurm job (``sbatch_args`` added to sbatch).
    Returns the report (also written to the run dir) and the first failure, if any.
    """
    import yaml

    from ascend.fileio import write_atomic
    from ascend.recipe import recipe_hash

    until = until or ORDER[-1]
    first, last = ORDER.index(stage_name(start, "--from")), ORDER.index(stage_name(until, "--until"))
    if first > last:
        raise RecipeError(f"--from {start} comes after --until {until}", fix="swap them")
    check_scheduler(scheduler, sbatch_args or [], serves=first <= ORDER.index("serve") <= last)
    run_dir = Path(run_dir) if run_dir else default_run_dir(recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = dir_lock(run_dir, "ascend run").acquire()  # two runs of one recipe would share its logs and reports
    report = RunReport(
        recipe=recipe.source_path or recipe.name,
        recipe_hash=recipe_hash(recipe),
        run_dir=str(run_dir),
        started_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    ctx = RunContext(recipe, run_dir, log=log, progress=progress, scheduler=scheduler, sbatch_args=list(sbatch_args or []))
    status: dict[str, str] = {}
    error: AscendError | None = None
    t_run = time.monotonic()

    def add(result: StageResult) -> None:
        status[result.stage] = result.status
        report.stages.append(result)
        echo(result)

    try:
        write_atomic(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        for i, name in enumerate(ORDER):
            dep = NEEDS.get(name)
            if not first <= i <= last:
                add(StageResult(name, "not-run", "outside --from/--until"))
                continue
            if error is not None and not (keep_going and isinstance(error, CheckFailed)):
                add(StageResult(name, "blocked", f"not run: {report.failed[0].stage} failed"))
                continue
            if dep and status.get(dep) in ("blocked", "failed"):
                why = {"blocked": "did not run", "failed": "failed"}[status[dep]]
                add(StageResult(name, "blocked", f"needs {dep}, which {why}"))
                continue
            t0 = time.monotonic()
            try:
                result = STAGE_FUNCS[name](ctx)
            except StageFailed as err:
                result, error = err.result, error or err
            except AscendError as err:
                result, error = StageResult(name, "failed", err.line()), error or err
            except KeyboardInterrupt:  # recorded, then the CLI exits 130 with one line
                add(StageResult(name, "interrupted", "interrupted; rerun to resume", time.monotonic() - t0))
                raise Interrupted(f"interrupted during {name}; rerun to resume") from None
            result.seconds = time.monotonic() - t0
            add(result)
        if hold is not None and ctx.service is not None and error is None:
            hold(ctx)
    finally:
        if ctx.service is not None:
            t0 = time.monotonic()
            result = stop_service(ctx)
            result.seconds = time.monotonic() - t0
            add(result)
            if result.status == "failed":
                error = error or CheckFailed(f"stop: {result.summary}")
        ctx.stack.close()
        report.seconds = time.monotonic() - t_run
        write_atomic(run_dir / "report.json", report.to_json())
        write_atomic(run_dir / "report.txt", report.to_text())
        from ascend.report import write_run_report

        try:  # report.html + history/<started>.json; a page that cannot be drawn must not fail the run
            write_run_report(run_dir, report.to_dict())
        except Exception as err:  # noqa: BLE001
            log(f"report.html not written: {type(err).__name__}: {err}")
        lock.release()
    return report, error


def check_scheduler(scheduler: str, sbatch_args: list[str], *, serves: bool) -> None:
    """Bad --scheduler / --sbatch-arg, or no sbatch to submit with: exit 2 before any stage runs."""
    if scheduler not in SCHEDULERS:
        raise RecipeError(f"--scheduler {scheduler!r} is not a scheduler", fix=f"use one of: {', '.join(SCHEDULERS)}")
    if sbatch_args and scheduler != "slurm":
        raise RecipeError("--sbatch-arg only applies with --scheduler slurm", fix="add --scheduler slurm")
    if scheduler == "slurm" and serves:
        from ascend.cluster.slurm_job import check_sbatch_args, require_sbatch

        check_sbatch_args(sbatch_args)
        require_sbatch()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; the message names the stage (the report records it too)."""


__all__ = ["ORDER", "SCHEDULERS", "Interrupted", "RunReport", "StageResult", "default_run_dir", "run_pipeline", "stage_name"]
