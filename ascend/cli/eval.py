"""`ascend eval`: accuracy of a served model on the recipe's tasks, or on tasks given by flags."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ascend.cli.common import interactive, set_option
from ascend.errors import CheckFailed, SmokeError


def parse_task(spec: str, samples: Optional[int], threshold: Optional[float], split: str):
    """``KIND:SOURCE[#SUBSET]`` -> an ``eval.tasks`` entry. SOURCE is a local file (or
    ``package:NAME``) when it looks like one, else a ModelScope dataset id."""
    from pydantic import ValidationError

    from ascend.recipe.schema import EvalTask

    kind, _, source = spec.partition(":")
    if kind not in ("math", "choice") or not source:
        raise SmokeError(f"--task {spec!r} is not KIND:SOURCE", fix="e.g. --task math:modelscope/gsm8k#main or --task choice:mmlu.jsonl")
    source, _, subset = source.partition("#")
    local = source.startswith("package:") or Path(source).suffix in (".jsonl", ".json", ".csv") or Path(source).exists()
    name = Path(source.split(":")[-1]).stem if local else source.rsplit("/", 1)[-1] + (f"-{subset}" if subset else "")
    try:
        return EvalTask(name=name, kind=kind, path=source if local else None, dataset=None if local else source,
                        subset=subset or None, split=split, samples=samples, threshold=threshold)
    except ValidationError as err:
        raise SmokeError(f"--task {spec!r}: {err.errors()[0]['msg']}") from None


def eval_cmd(
    recipe: Optional[str] = typer.Argument(None, help="Recipe (path or built-in name): its endpoint and eval section."),
    overrides: list[str] = set_option(),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Endpoint root, e.g. http://10.0.0.11:18000 (with or without /v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Served model id (required with --base-url)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ASCEND_SMOKE_API_KEY", help="Bearer token, if the endpoint needs one."),
    tasks: list[str] = typer.Option([], "--task", metavar="KIND:SOURCE[#SUBSET]", help="A task instead of the recipe's (repeatable): KIND math or choice; SOURCE a JSONL/JSON/CSV file or a ModelScope dataset id."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Items per task (overrides the recipe; default for --task: 100)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Minimum accuracy 0-1 for every --task (exit 3 below it)."),
    split: str = typer.Option("test", "--split", help="Dataset split for --task datasets."),
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="Thinking mode (default: the recipe's eval.thinking, else off)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Completion limit per question (default: the recipe's, else 1024)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where ModelScope datasets are downloaded (default ~/.cache/ascend/datasets)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report (scores, every answer) to this file ('-' = stdout)."),
) -> None:
    """Accuracy through an OpenAI-compatible endpoint: GSM8K-style math (last number of the
    reply) and MMLU / C-Eval-style multiple choice (option letter), greedy, with the recipe's
    thinking mode. Exit 3 naming the task and score when a score is below its threshold; exit 2
    with one line (file:line or dataset id) when a dataset cannot be loaded.

    Examples:

    \b
      ascend eval tiny/glm5-cpu                          # endpoint and eval.tasks from the recipe
      ascend eval glm5/a3-w8a8 --samples 50 --json eval.json
      ascend eval --base-url http://10.0.0.11:18000 --model GLM-5-w8a8 \\
          --task math:modelscope/gsm8k#main --task choice:modelscope/ceval-exam#computer_network --split val
      ascend eval --base-url http://127.0.0.1:8000 --model m --task choice:my-mcq.jsonl --threshold 0.6
    """
    from rich.console import Console

    from ascend.evaluate import run_eval
    from ascend.fileio import write_atomic
    from ascend.paths import writable_file
    from ascend.recipe.schema import EvalSection
    from ascend.smoke import Endpoint

    if json_out is not None and str(json_out) != "-":
        writable_file(json_out, "--json")
    if recipe is None and base_url is None:
        raise SmokeError("give a RECIPE or --base-url (with --model and --task)", fix="e.g. ascend eval tiny/glm5-cpu")
    if base_url is not None and not model:
        raise SmokeError("--base-url needs --model (the served model id)", fix="see GET <base-url>/v1/models")
    cfg = EvalSection()
    if recipe is not None:
        from ascend.cli.smoke import endpoint_for_recipe
        from ascend.recipe import load_recipe

        r = load_recipe(recipe, overrides)
        cfg = r.eval
        ep = endpoint_for_recipe(r, api_key, cfg.timeout_s)
    if base_url is not None:
        ep = Endpoint.parse(base_url, model, api_key, cfg.timeout_s)
    elif model:
        ep = Endpoint(ep.root, model, ep.api_key, ep.timeout)
    if tasks:
        cfg = cfg.model_copy(update={"tasks": [parse_task(t, samples or 100, threshold, split) for t in tasks]})
    elif samples:
        cfg = cfg.model_copy(update={"tasks": [t.model_copy(update={"samples": samples}) for t in cfg.tasks]})
    if not cfg.tasks:
        raise SmokeError("no eval tasks", fix="add eval.tasks to the recipe, or pass --task KIND:SOURCE")
    update = {k: v for k, v in (("thinking", thinking), ("max_tokens", max_tokens)) if v is not None}
    cfg = cfg.model_copy(update=update)

    to_stdout = str(json_out) == "-"
    console = Console(stderr=to_stdout, highlight=False, soft_wrap=True)
    show = (lambda t: Console(stderr=True, highlight=False).print(f"  {t.name}: done ({t.seconds:.1f} s)", style="dim")) if interactive() else None
    report = run_eval(ep, cfg, cache_dir=cache_dir, on_task=show)
    for t in report.tasks:
        console.print(("ok    " if t.passed else "FAIL  ") + t.line(), style="green" if t.passed else "bold red", markup=False)
    if json_out is not None:
        if to_stdout:
            typer.echo(report.to_json(), nl=False)
        else:
            write_atomic(json_out, report.to_json())
    if not report.ok:
        raise CheckFailed("eval below threshold: " + "; ".join(t.line() for t in report.failed()),
                          fix="see the --json report for every answer")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
