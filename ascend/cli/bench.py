"""`ascend bench`: the serving benchmark against a recipe's endpoint or any OpenAI-compatible URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ascend.cli.common import interactive, set_option


def _ints(text: str, option: str) -> list[int]:
    from ascend.bench import BenchError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise BenchError(f"{option} {text!r}: expected positive integers separated by commas", fix=f"e.g. {option} 1,4,16")
    return values


def bench_config(base: Any, **flags: Any) -> Any:
    """``base`` (a recipe's bench section) with the command-line flags that were given applied."""
    from pydantic import ValidationError

    from ascend.bench import BenchError
    from ascend.recipe.schema import BenchSection

    data = base.model_dump()
    for key, value in flags.items():
        if value is not None:
            data[key] = value
    try:
        return BenchSection.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise BenchError(f"bench option {where}: {e['msg']}", fix="see `ascend bench --help`") from None


def bench(
    recipe: Optional[str] = typer.Argument(None, help="Recipe (path or built-in name) whose served endpoint to benchmark."),
    overrides: list[str] = set_option(),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Endpoint root, e.g. http://10.0.0.11:18000 (with or without /v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Served model id (required with --base-url)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Directory with the model's tokenizer.json (and chat template); default with a RECIPE: the served checkpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ASCEND_BENCH_API_KEY", help="Bearer token, if the endpoint needs one."),
    api: Optional[str] = typer.Option(None, "--api", help="chat (/v1/chat/completions, default) or completions (/v1/completions)."),
    concurrency: Optional[str] = typer.Option(None, "--concurrency", help="Concurrency levels, comma-separated, e.g. 1,4,16."),
    input_len: Optional[int] = typer.Option(None, "--input-len", help="Prompt length in tokens (one workload; overrides the recipe's workloads)."),
    output_len: Optional[int] = typer.Option(None, "--output-len", help="Completion length in tokens (with --input-len)."),
    num_prompts: Optional[int] = typer.Option(None, "--num-prompts", help="Requests per level (default 4 x concurrency, at least 8)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="JSONL prompt file: one {\"prompt\": ...} or {\"messages\": [...]} per line."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory for bench.json and the charts (default runs/<recipe or model>/bench)."),
) -> None:
    """Benchmark an OpenAI-compatible endpoint: streamed requests swept over concurrency levels and
    prompt shapes; TTFT, TPOT, ITL and end-to-end latency (p50/p90/p99), request and token
    throughput, errors and goodput against the recipe's SLOs. Writes bench.json and two PNG charts
    (throughput and latency vs concurrency). Exit 3 when a threshold of the recipe's `bench`
    section is broken, 2 for bad input (e.g. a bad dataset line).

    Examples:

    \b
      ascend bench tiny/glm5-cpu                      # endpoint, sweep and thresholds from the recipe
      ascend bench glm5/a3-w8a8 --concurrency 1,8,32 --input-len 2048 --output-len 256
      ascend bench --base-url http://10.0.0.11:18000 --model GLM-5-w8a8 --tokenizer /data/GLM-5-w8a8
      ascend bench --base-url http://127.0.0.1:8000/v1 --model m --dataset prompts.jsonl --api chat
    """
    from rich.console import Console

    from ascend.bench import BenchError, Target, run_bench
    from ascend.errors import CheckFailed
    from ascend.paths import writable_dir
    from ascend.recipe.schema import BenchSection

    if (recipe is None) == (base_url is None):
        raise BenchError("give either a RECIPE or --base-url (with --model)", fix="e.g. ascend bench tiny/glm5-cpu")
    workloads = None
    if input_len is not None or output_len is not None:
        workloads = [{"input_len": input_len or 1024, "output_len": output_len or 128}]
    flags = dict(api=api, concurrency=_ints(concurrency, "--concurrency") if concurrency else None, workloads=workloads,
                 num_prompts=num_prompts, dataset=str(dataset) if dataset else None)
    if recipe is not None:
        from ascend.cli.smoke import endpoint_for_recipe
        from ascend.recipe import load_recipe
        from ascend.serve.xllm import served_model_dir

        r = load_recipe(recipe, overrides)
        ep = endpoint_for_recipe(r)
        cfg = bench_config(r.bench, **flags)
        target = Target.parse(ep.root, model or ep.model, str(tokenizer or served_model_dir(r)), api_key)
        out = out or Path("runs") / r.name / "bench"
    else:
        if not model:
            raise BenchError("--base-url needs --model (the served model id)", fix="see GET <base-url>/v1/models")
        if overrides:
            raise BenchError("--set needs a RECIPE", fix="with --base-url use the flags (--concurrency, --input-len, ...)")
        cfg = bench_config(BenchSection(), **flags)
        target = Target.parse(base_url, model, str(tokenizer) if tokenizer else None, api_key)
        out = out or Path("runs") / model.replace("/", "_") / "bench"
    writable_dir(out, "--out")
    console = Console(highlight=False, soft_wrap=True, width=None if interactive() else 160)  # logs: the full table
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    data = run_bench(cfg, target, out, log=lambda line: err.print(line, style="dim", markup=False))
    render_table(data, console)
    console.print(f"bench.json and charts: {out}" + (f" ({data['charts_skipped']})" if data["charts_skipped"] else ""), markup=False)
    if data["broken"]:
        raise CheckFailed("; ".join(data["broken"]), fix=f"see {out / 'bench.json'}")


def render_table(data: dict, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"bench {data['target']['model']} ({data['target']['api']})", title_justify="left")
    for col in ("conc", "in/out", "ok/req", "req/s", "out tok/s", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "ITL p99 ms", "E2E p99 ms", "goodput"):
        table.add_column(col, justify="right")
    f = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    for lv in data["levels"]:
        table.add_row(
            str(lv["concurrency"]), f"{lv['input_len']}/{lv['output_len']}", f"{lv['completed']}/{lv['requests']}",
            f(lv["requests_per_s"]), f(lv["output_tokens_per_s"]),
            f"{f(lv['ttft_ms']['p50'])}/{f(lv['ttft_ms']['p99'])}", f"{f(lv['tpot_ms']['p50'])}/{f(lv['tpot_ms']['p99'])}",
            f(lv["itl_ms"]["p99"]), f(lv["e2e_ms"]["p99"]), f(lv["goodput_ratio"]),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
