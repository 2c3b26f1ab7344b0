"""The ``eval`` stage of `ascend run`: the recipe's accuracy tasks against the running service.

Artifact: ``<run>/eval.json`` (scores, thresholds, every answer). Never skipped as complete (the
service is new each run); ``skipped`` when ``eval.enabled`` is false or no task is listed.
"""

from __future__ import annotations

from ascend.fileio import write_atomic
from ascend.pipeline.report import StageResult
from ascend.pipeline.stages import RunContext, StageFailed


def stage_eval(ctx: RunContext) -> StageResult:
    from ascend.evaluate import run_eval
    from ascend.smoke import Endpoint

    cfg = ctx.recipe.eval
    if not cfg.enabled or not cfg.tasks:
        return StageResult("eval", "skipped", "eval.enabled is false or eval.tasks is empty")
    if ctx.service is None:
        return StageResult("eval", "blocked", "needs a running service, and the serve stage did not run")
    ep = Endpoint.parse(ctx.service.base_url, ctx.service.served_model)
    with ctx.beat(f"eval: {len(cfg.tasks)} task(s) against {ep.root}"):
        report = run_eval(ep, cfg, cache_dir=ctx.run_dir / "datasets",
                          on_task=lambda t: ctx.log(f"  eval {t.line()}"))
    write_atomic(ctx.run_dir / "eval.json", report.to_json())
    details = {"tasks": {t.name: {"score": round(t.score, 4), "threshold": t.threshold, "samples": t.samples,
                                  "passed": t.passed} for t in report.tasks}}
    if not report.ok:
        failed = "; ".join(t.line() for t in report.failed())
        raise StageFailed(StageResult("eval", "failed", f"below threshold: {failed}", details=details))
    return StageResult("eval", "ok", report.summary(), details=details)
