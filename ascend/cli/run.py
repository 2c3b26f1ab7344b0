"""`ascend run`: the whole chain from one recipe, stage by stage, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ascend.cli.common import interactive, json_option, print_json, set_option

HELP = """\
Run every stage of a recipe: plan -> source (fetch, or `ascend tiny` for tiny recipes) ->
convert -> verify -> serve -> smoke -> bench -> eval (when the recipe enables them) -> stop. A stage whose artifact is already complete for
this recipe is skipped, so a rerun resumes where the last one stopped. One line per stage;
the full report goes to RUN_DIR/report.json, report.txt and report.html (a page with charts; earlier
runs are kept in RUN_DIR/history/) (default RUN_DIR: runs/<recipe name>).

Exit 0 when every stage that ran passed, 3 when a check failed (plan does not fit, verify
mismatch, smoke failure, broken bench threshold, an eval score below its threshold, a Slurm serve job that ended before
it was ready), 2 for a bad recipe or input (or another run using RUN_DIR, or with --scheduler slurm no sbatch or
a refused submission), 130 after
Ctrl-C (the report names the stage).

Examples:

\b
  ascend run tiny/glm5-cpu                             # the whole chain on CPU, in minutes
  ascend run tiny/glm5-cpu --set serve.port=19080
  ascend run glm5/a3-w8a8 --until convert              # fetch and convert only
  ascend run glm5/a3-w8a8 --from serve                 # reuse the converted checkpoint
  ascend run glm5/a3-w8a8 --until serve                # bring the service up, serve until Ctrl-C
  ascend run glm5/a3x2-bf16 --from serve --scheduler slurm --sbatch-arg=--partition=npu
"""


def register(app: typer.Typer) -> None:
    @app.command("run", help=HELP)
    def run_cmd(
        recipe: str = typer.Argument(..., help="Recipe file or built-in name, e.g. tiny/glm5-cpu."),
        overrides: list[str] = set_option(),
        until: Optional[str] = typer.Option(None, "--until", help="Last stage to run: plan, source (= fetch), convert, verify, serve, smoke, bench, eval (default: the last)."),
        start: str = typer.Option("plan", "--from", help="First stage to run (earlier artifacts must exist)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where reports and logs go (default runs/<recipe name>)."),
        keep_going: bool = typer.Option(False, "--keep-going", help="After a failed check (verify), still serve and smoke to see the effect."),
        scheduler: str = typer.Option("local", "--scheduler", metavar="local|slurm", help="Where the serve stage runs: `local` starts the ranks here; `slurm` submits `ascend serve --emit slurm`'s job with sbatch, waits for its `ready:` line and /health, and scancels it at the end (docs/slurm.md)."),
        sbatch_args: list[str] = typer.Option([], "--sbatch-arg", metavar="ARG", help="With --scheduler slurm: one more sbatch argument, e.g. --sbatch-arg=--partition=npu (repeatable; SBATCH_* variables work too)."),
        as_json: bool = json_option("Print the run report as JSON on stdout (stage lines go to stderr)."),
    ) -> None:
        from rich.console import Console

        from ascend.pipeline import Interrupted, run_pipeline
        from ascend.pipeline.report import STYLE
        from ascend.recipe import load_recipe

        r = load_recipe(recipe, overrides)
        from ascend.paths import writable_dir
        from ascend.pipeline import default_run_dir

        writable_dir(run_dir or default_run_dir(r), "--run-dir" if run_dir else "run directory (--run-dir default)")
        out = Console(stderr=as_json, highlight=False, soft_wrap=True)
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        show_log = interactive()

        def echo(result) -> None:
            out.print(result.line(), style=STYLE[result.status], markup=False)

        def log(line: str) -> None:
            if show_log:
                err.print(line, style="dim", markup=False)

        def hold(ctx) -> None:
            import signal
            import threading

            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *a: stop.set())
            job = getattr(ctx.service, "job_id", None)
            where = f" (Slurm job {job})" if job else ""
            out.print(f"serving at {ctx.service.base_url}{where} (model {ctx.service.served_model!r}); Ctrl-C to stop",
                      markup=False)
            try:
                ctx.service.wait(stop.is_set)
            except KeyboardInterrupt:
                pass

        out.print(f"ascend run {recipe}: {r.description or r.name}", style="bold", markup=False)
        try:
            report, error = run_pipeline(
                r, run_dir=run_dir, start=start, until=until, keep_going=keep_going, echo=echo, log=log,
                hold=hold if until == "serve" else None, progress=True,  # bars, or plain lines when piped
                scheduler=scheduler, sbatch_args=sbatch_args,
            )
        except Interrupted as stopped:  # Ctrl-C: one line (the report records the stage), exit 130
            err.print(f"{stopped}", markup=False)
            raise typer.Exit(130) from None
        style = "bold red" if report.failed or report.interrupted else "bold green"
        out.print(report.verdict(), style=style, markup=False)
        out.print(f"report: {Path(report.run_dir) / 'report.txt'} (JSON: report.json)", markup=False)
        if as_json:
            print_json(report.to_dict())
        if error is not None:
            raise error
