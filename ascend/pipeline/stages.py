"""The stages of `ascend run`, each a thin adapter over its library function.

Every stage returns a :class:`StageResult` (``ok`` or ``skipped`` when its artifact is already
complete for this recipe) or raises an ``AscendError`` when it runs and fails. Libraries are
imported inside the stage functions: ``ascend run --until plan`` never loads torch.

Artifacts and how a rerun knows they are complete:

=========  ======================================  ==========================================
stage      artifact                                complete when
=========  ======================================  ==========================================
plan       ``<run>/plan.json``                     always recomputed (milliseconds)
source     ``model.path``                          tiny: ``<run>/stages/source.json`` names the
                                                   same ``model`` section and the dir has its
                                                   config; hub: ``ascend.fetch`` completeness;
                                                   local: completeness check
convert    ``convert.output``                      ``ascend-manifest.json`` present for the same
                                                   conversion recipe hash (``ascend.convert``)
verify     ``<run>/verify.json``                   the recorded report is for the same manifest
serve      running ranks, ``<run>/logs/``          never (a service is started each run)
smoke      ``<run>/smoke.json``, ``smoke.xml``     never
bench      ``<run>/bench/`` (bench.json, PNGs)     never (off unless ``bench.enabled``)
eval       ``<run>/eval.json``                     never (skipped when ``eval.enabled`` is false)
=========  ======================================  ==========================================
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ascend import __version__
from ascend.checkpoint.files import MANIFEST
from ascend.errors import CheckFailed, CheckpointError
from ascend.fileio import atomic_dir, write_atomic
from ascend.paths import writable_dir
from ascend.pipeline.report import StageResult


@dataclass
class RunContext:
    """What the stages share: the recipe, the run directory, the running service."""

    recipe: Any
    run_dir: Path
    log: Callable[[str], None] = lambda s: None
    progress: bool = False
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    service: Any = None
    manifest_sha256: str | None = None
    scheduler: str = "local"  # or "slurm": the serve stage submits a job (ascend.pipeline.serve_slurm)
    sbatch_args: list[str] = field(default_factory=list)

    def record_path(self, stage: str) -> Path:
        return self.run_dir / "stages" / f"{stage}.json"

    def read_record(self, stage: str) -> dict | None:
        try:
            return json.loads(self.record_path(stage).read_text())
        except (OSError, ValueError):
            return None

    def write_record(self, stage: str, data: dict) -> None:
        write_atomic(self.record_path(stage), json.dumps(data, indent=2) + "\n")

    def beat(self, what: str, detail: Callable[[], str] | None = None) -> Any:
        """Progress of a long step when ``progress`` is on (``ascend.progress.heartbeat``)."""
        from ascend.progress import heartbeat

        return heartbeat(what, detail) if self.progress else contextlib.nullcontext()


def _hash(recipe: Any, sections: list[str]) -> str:
    from ascend.recipe import recipe_hash

    return recipe_hash(recipe, sections)


# --------------------------------------------------------------------------------------- plan


def stage_plan(ctx: RunContext) -> StageResult:
    from ascend.plan import plan_recipe, require_fit

    plan = plan_recipe(ctx.recipe)
    data = plan.as_dict()
    write_atomic(ctx.run_dir / "plan.json", json.dumps(data, indent=2, default=str) + "\n")
    require_fit(plan)  # CheckFailed (exit 3) with the computed fixes
    r = ctx.recipe
    dev = max(plan.devices, key=lambda d: d.fixed)
    summary = (
        f"{r.layout.world} ranks on {plan.chip.name}: attention TP{r.layout.attn_tp} x DP{r.layout.dp}, "
        f"EP{r.layout.ep} (MoE TP{r.layout.moe_tp}); {_size(dev.weights_total)} weights/device, "
        f"KV for {plan.kv_tokens} tokens per DP group; fits"
    )
    return StageResult("plan", "ok", summary, details={"plan": str(ctx.run_dir / "plan.json")})


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------- source


def stage_source(ctx: RunContext) -> StageResult:
    m = ctx.recipe.model
    if m.source == "tiny":
        return _source_tiny(ctx)
    if m.source == "local":
        return _source_local(ctx)
    return _source_hub(ctx)


def _source_tiny(ctx: RunContext) -> StageResult:
    m = ctx.recipe.model
    path = Path(m.path)
    key = _hash(ctx.recipe, ["model"]) + "/" + __version__
    rec = ctx.read_record("source")
    if rec and rec.get("key") == key and (path / "config.json").is_file():
        return StageResult("source", "skipped", f"tiny checkpoint {path} already generated for this recipe")
    if path.exists() and not (rec and rec.get("path") == str(path)):
        raise CheckpointError(
            f"model.path {path} exists but was not generated by this run directory's recipe",
            fix=f"remove {path} (it is regenerated), or set model.path to a new directory",
        )
    tiny = m.tiny
    scripted = bool(tiny and tiny.scripted)
    options = tiny.model_dump(exclude={"scripted"}) if tiny else {}
    if scripted:
        from ascend.smoke.probes import probe_conversations
        from ascend.tiny.scripted import write_scripted_checkpoint

        write = lambda out, family, **kw: write_scripted_checkpoint(out, family, conversations=probe_conversations(), **kw)  # noqa: E731
    else:
        from ascend.tiny.writer import write_tiny_checkpoint as write
    # Generate beside the target and rename: a killed run never leaves a half-written source.
    writable_dir(path.parent, "model.path's parent")
    with atomic_dir(path) as tmp, ctx.beat(f"source: writing the tiny checkpoint {path}"):
        write(tmp, m.family, **options)
    ctx.write_record("source", {"key": key, "path": str(path), "family": m.family, "options": options, "scripted": scripted})
    kind = "scripted (constructed weights)" if scripted else "random"
    fp8 = "FP8" if options.get("fp8") else "BF16"
    return StageResult("source", "ok", f"tiny {m.family} {kind} {fp8} checkpoint -> {path}")


def _source_local(ctx: RunContext) -> StageResult:
    from ascend.fetch import verify_local

    path = Path(ctx.recipe.model.path)
    if not path.is_dir():
        raise CheckpointError(f"model.path {path} does not exist", fix="point model.path at the checkpoint, or use source: modelscope")
    report, _ = verify_local(path)
    if not report.complete:
        raise CheckpointError(f"{path}: {report.summary()}", fix=f"run `ascend fetch` again or repair {path}")
    return StageResult("source", "ok", f"local checkpoint {path}: {report.summary()}")


def _source_hub(ctx: RunContext) -> StageResult:
    m = ctx.recipe.model
    from ascend.fetch import fetch, read_record, verify_local

    path = Path(m.path)
    rec = read_record(path) if path.is_dir() else None
    if rec and rec.get("model_id") == m.id and rec.get("revision") in (None, m.resolved_revision):
        report, _ = verify_local(path)
        if report.complete:
            return StageResult("source", "skipped", f"{m.id} already complete in {path}: {report.summary()}")
    writable_dir(path, "model.path")
    with ctx.beat(f"source: fetching {m.id} into {path}"):
        result = fetch(m.id, local_dir=path, source=m.source, revision=m.revision)
    if not result.complete:
        raise CheckFailed(
            f"{m.id} is incomplete in {path}: {result.report.summary()}",
            why=result.download_error,
            fix="rerun `ascend run` (downloads resume), or `ascend fetch` for details",
        )
    return StageResult("source", "ok", f"fetched {m.id}@{result.revision} -> {path}: {result.report.summary()}")


# ------------------------------------------------------------------------------------ convert


def convert_options(recipe: Any) -> Any:
    """ConvertOptions from a recipe, exactly as `ascend convert RECIPE` builds them."""
    from ascend.convert.jobs import ConvertOptions

    return ConvertOptions.from_recipe(recipe)


CONVERT_SECTIONS = ["model", "parallel", "hardware", "convert"]


def stage_convert(ctx: RunContext) -> StageResult:
    from ascend.convert.pipeline import convert

    r = ctx.recipe
    opts = convert_options(r)
    out = writable_dir(r.convert.output, "convert.output")
    result = convert(
        r.model.path, out, opts, workers=r.convert.workers, recipe_hash=_hash(r, CONVERT_SECTIONS),
        progress=ctx.progress, log=ctx.log, calibration=r.convert.calibration,
        # `ascend run` has no --force: name the command that has, with this run's resolved recipe
        force_hint=f"run `ascend convert {ctx.run_dir / 'recipe.yaml'} --force`",
    )
    if not result.complete:
        raise CheckpointError(f"conversion into {out} did not complete", fix="rerun `ascend run` to resume")
    ctx.manifest_sha256 = _manifest_sha(out)
    what = f"{opts.precision}, layout {opts.layout}, {opts.parallel}"
    if not result.files_written:
        return StageResult("convert", "skipped", f"{out} already complete for this recipe ({what})")
    return StageResult(
        "convert", "ok",
        f"{what} -> {out}: {len(result.files_written)} weight file(s), {result.bytes_written / 1e6:.1f} MB",
        details={"files_written": len(result.files_written), "bytes_written": result.bytes_written,
                 "peak_rss_bytes": _peak_rss()},
    )


def _peak_rss() -> int:
    """Largest resident set of this process or any finished child (workers), in bytes (Linux: kB)."""
    import resource

    return 1024 * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def _manifest_sha(out: Path) -> str | None:
    p = out / MANIFEST
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


# ------------------------------------------------------------------------------------- verify


def stage_verify(ctx: RunContext) -> StageResult:
    from ascend.convert.verify import verify

    r = ctx.recipe
    out = Path(r.convert.output)
    manifest = ctx.manifest_sha256 or _manifest_sha(out)
    rec = ctx.read_record("verify")
    if rec and manifest and rec.get("manifest_sha256") == manifest and rec.get("ok"):
        return StageResult("verify", "skipped", f"{out} already verified: {rec.get('summary', '')}")
    with ctx.beat(f"verify: checking {out}"):
        report = verify(out, against=r.model.path)
    data = report.to_json()
    summary = (f"{report.files_checked} files checksummed, {report.tensors_checked}/{report.tensors_total} tensors "
               f"match the source")
    if report.logits:
        summary += f"; logits: {report.logits_line()}"
    summary += "".join(f"; note: {n}" for n in report.notes)
    write_atomic(ctx.run_dir / "verify.json", json.dumps(data, indent=2, default=str) + "\n")
    ctx.write_record("verify", {"manifest_sha256": manifest, "ok": report.ok, "summary": summary})
    if not report.ok:
        raise StageFailed(StageResult(
            "verify", "failed",
            f"{len(report.problems)} problem(s), first: {report.problems[0]} (all: {ctx.run_dir / 'verify.json'})",
            details={"problems": report.problems[:50]},
        ))
    return StageResult("verify", "ok", summary)


# -------------------------------------------------------------------------------------- serve


def stage_serve(ctx: RunContext) -> StageResult:
    from ascend.serve.launch import Service
    from ascend.serve.preflight import preflight
    from ascend.serve.xllm import build_deployment

    r = ctx.recipe
    dep = build_deployment(r)
    if ctx.scheduler == "slurm":
        from ascend.pipeline.serve_slurm import serve_on_slurm

        return serve_on_slurm(ctx, dep)
    preflight(r, dep.model_dir, ref=r.source_path or r.name)
    log_dir = ctx.run_dir / "logs"
    service = Service(dep, log_dir=log_dir, timeout_s=r.serve.startup_timeout_s)
    t0 = time.monotonic()
    with ctx.beat(f"serve: waiting for readiness (logs in {log_dir})"):
        ctx.service = ctx.stack.enter_context(service)
    ranks = len(dep.node_ranks(0))
    extra = f" (node 0 of {len(dep.hosts)}; start the other nodes with `ascend serve`)" if len(dep.hosts) > 1 else ""
    return StageResult(
        "serve", "ok",
        f"{ranks} {r.serve.engine} ranks serving {dep.served_model!r} at {service.base_url}, ready in "
        f"{time.monotonic() - t0:.1f} s{extra}; logs in {log_dir}",
        details={"base_url": service.base_url, "model": dep.served_model, "logs": str(log_dir)},
    )


# -------------------------------------------------------------------------------------- smoke


def stage_smoke(ctx: RunContext) -> StageResult:
    from ascend.smoke import Endpoint, config_from_recipe, run_smoke, to_json, to_junit

    if ctx.service is None:
        return StageResult("smoke", "blocked", "needs a running service, and the serve stage did not run "
                           "(use --from serve or earlier, or `ascend smoke` against a running service)")
    ep = Endpoint.parse(ctx.service.base_url, ctx.service.served_model)
    report = run_smoke(ep, config_from_recipe(ctx.recipe), on_result=lambda res: ctx.log(f"  smoke {res.name}: {res.status} {res.detail}"))
    write_atomic(ctx.run_dir / "smoke.json", to_json(report))
    write_atomic(ctx.run_dir / "smoke.xml", to_junit(report))
    c = report.counts()
    summary = f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped (report: {ctx.run_dir / 'smoke.json'})"
    details = {"checks": {x.name: {"status": x.status, "detail": x.detail} for x in report.results}}
    if not report.ok:
        failed = "; ".join(f"{x.name}: {x.detail}" for x in report.failed())
        raise StageFailed(StageResult("smoke", "failed", f"{summary} — {failed}", details=details))
    return StageResult("smoke", "ok", summary, details=details)


# -------------------------------------------------------------------------------------- bench


def stage_bench(ctx: RunContext) -> StageResult:
    from ascend.bench import Target, run_bench
    from ascend.serve.xllm import served_model_dir

    r = ctx.recipe
    if not r.bench.enabled:
        return StageResult("bench", "skipped", "not enabled in the recipe (set bench.enabled: true, "
                           "or run `ascend bench RECIPE` against a running service)")
    if ctx.service is None:
        return StageResult("bench", "blocked", "needs a running service, and the serve stage did not run")
    out = ctx.run_dir / "bench"
    target = Target.parse(ctx.service.base_url, ctx.service.served_model, served_model_dir(r))
    with ctx.beat(f"bench: {len(r.bench.workloads)} workload(s) x concurrency {r.bench.concurrency}"):
        data = run_bench(r.bench, target, out, log=ctx.log)
    best = max(data["levels"], key=lambda lv: lv["output_tokens_per_s"] or 0)
    summary = (f"{len(data['levels'])} level(s); best {best['output_tokens_per_s']} output tok/s at concurrency "
               f"{best['concurrency']} (TTFT p99 {best['ttft_ms']['p99']} ms, TPOT p99 {best['tpot_ms']['p99']} ms); "
               f"report: {out / 'bench.json'}")
    details = {"bench": str(out / "bench.json"), "charts": data["charts"]}
    if data["broken"]:
        raise StageFailed(StageResult("bench", "failed", "; ".join(data["broken"]), details=details))
    return StageResult("bench", "ok", summary, details=details)


# --------------------------------------------------------------------------------------- eval


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


class StageFailed(CheckFailed):
    """A check stage ran and did not pass; carries its full result for the report."""

    def __init__(self, result: StageResult):
        self.result = result
        super().__init__(f"{result.stage}: {result.summary}")


def stop_service(ctx: RunContext) -> StageResult:
    if ctx.service is None:
        return StageResult("stop", "skipped", "nothing running")
    codes = ctx.service.stop()
    job = getattr(ctx.service, "job_id", None)
    ctx.stack.close()
    ctx.service = None
    if job is not None:  # a Slurm job: {job id: its final state}
        state = codes[job]
        if state.startswith("still"):
            return StageResult("stop", "failed", f"Slurm job {job} {state} after scancel — see `squeue -j {job}`",
                                details={"slurm_job": job})
        return StageResult("stop", "ok", f"Slurm job {job} cancelled ({state})", details={"slurm_job": job})
    return StageResult("stop", "ok", f"{len(codes)} ranks stopped (exit codes {sorted(set(codes.values()), key=str)})")


STAGE_FUNCS: dict[str, Callable[[RunContext], StageResult]] = {
    "plan": stage_plan,
    "source": stage_source,
    "convert": stage_convert,
    "verify": stage_verify,
    "serve": stage_serve,
    "smoke": stage_smoke,
    "bench": stage_bench,
    "eval": stage_eval,
}

__all__ = ["RunContext", "STAGE_FUNCS", "StageFailed", "stop_service"]
