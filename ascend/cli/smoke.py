"""`ascend smoke`: run the smoke suite against a recipe's endpoint or any OpenAI-compatible URL."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ascend.cli.common import interactive, set_option
from ascend.errors import CheckFailed, SmokeError


def endpoint_for_recipe(recipe, api_key: str | None = None, timeout: float = 300.0):
    """The endpoint ``ascend serve`` starts for ``recipe``: rank 0's URL and the served model id."""
    from ascend.serve.xllm import build_deployment
    from ascend.smoke import Endpoint

    dep = build_deployment(recipe)
    return Endpoint.parse(dep.base_url(), dep.served_model, api_key, timeout)


def write_reports(report, json_path: Optional[Path], junit_path: Optional[Path]) -> None:
    from ascend.fileio import write_atomic
    from ascend.smoke import to_json, to_junit

    if json_path is not None:
        if str(json_path) == "-":
            typer.echo(to_json(report), nl=False)
        else:
            write_atomic(json_path, to_json(report))
    if junit_path is not None:
        write_atomic(junit_path, to_junit(report))


def smoke(
    recipe: Optional[str] = typer.Argument(None, help="Recipe (path or built-in name) whose served endpoint to test."),
    overrides: list[str] = set_option(),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Endpoint root, e.g. http://10.0.0.11:18000 (with or without /v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Served model id (required with --base-url)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ASCEND_SMOKE_API_KEY", help="Bearer token, if the endpoint needs one."),
    checks: Optional[str] = typer.Option(None, "--checks", help="Comma-separated checks to run (default: the recipe's smoke.checks, else all)."),
    skip: list[str] = typer.Option([], "--skip", help="Skip a check (repeatable)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="Context length for the long-prompt check (default: recipe, else /v1/models)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Parallel streams in the concurrency check."),
    timeout: float = typer.Option(300.0, "--timeout", help="Per-request timeout in seconds."),
    wait: float = typer.Option(0.0, "--wait", help="First wait up to this many seconds for /health to answer 200."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report to this file ('-' = stdout, table suppressed)."),
    junit_out: Optional[Path] = typer.Option(None, "--junit", help="Write a JUnit XML report to this file."),
) -> None:
    """Smoke-test an OpenAI-compatible endpoint: readiness, chat, streaming, max_tokens, stop,
    thinking on/off, tool calls (plain, streamed, zero-argument, multi-turn), a long prompt,
    concurrency with latency thresholds, and error handling. Exit 3 if any check fails.

    Examples:

    \b
      ascend smoke tiny/glm5-cpu                         # endpoint and checks from the recipe
      ascend smoke glm5/a3-w8a8 --junit smoke.xml --json smoke.json
      ascend smoke --base-url http://10.0.0.11:18000 --model GLM-5-w8a8 --max-model-len 40960
      ascend smoke --base-url http://127.0.0.1:8000/v1 --model m --checks chat,stream,tools
    """
    from dataclasses import replace

    from rich.console import Console

    from ascend.paths import writable_file
    from ascend.smoke import SmokeConfig, config_from_recipe, render_table, run_smoke, wait_ready

    for option, path in (("--json", json_out), ("--junit", junit_out)):
        if path is not None and str(path) != "-":
            writable_file(path, option)  # before the suite runs, not after
    if (recipe is None) == (base_url is None):
        raise SmokeError("give either a RECIPE or --base-url (with --model)", fix="e.g. ascend smoke tiny/glm5-cpu")
    if recipe is not None:
        from ascend.recipe import load_recipe

        r = load_recipe(recipe, overrides)
        cfg = config_from_recipe(r)
        ep = endpoint_for_recipe(r, api_key, timeout)
        if model:
            ep = type(ep)(ep.root, model, ep.api_key, ep.timeout)
    else:
        if not model:
            raise SmokeError("--base-url needs --model (the served model id)", fix="see GET <base-url>/v1/models")
        from ascend.smoke import Endpoint

        ep = Endpoint.parse(base_url, model, api_key, timeout)
        cfg = SmokeConfig()
    cfg = replace(
        cfg,
        checks=tuple(c.strip() for c in checks.split(",") if c.strip()) if checks else cfg.checks,
        skip={**cfg.skip, **{name: "skipped with --skip" for name in skip}},
        max_model_len=max_model_len or cfg.max_model_len,
        concurrency=concurrency or cfg.concurrency,
    )

    console = Console(stderr=str(json_out) == "-", highlight=False)
    if wait > 0:
        wait_ready(ep, wait)
    progress = None
    if interactive() and str(json_out) != "-":  # slow endpoints: show each check as it finishes
        err = Console(stderr=True, highlight=False)
        progress = lambda r: err.print(f"  {r.name}: {r.status} ({r.seconds:.1f} s)", style="dim", markup=False)  # noqa: E731
    report = run_smoke(ep, cfg, on_result=progress)
    if str(json_out) != "-":
        render_table(report, console)
    write_reports(report, json_out, junit_out)
    if not report.ok:
        raise CheckFailed(report.summary_line(), fix="see the table above (or the --json report) for each failure")


def register(app: typer.Typer) -> None:
    app.command("smoke")(smoke)
