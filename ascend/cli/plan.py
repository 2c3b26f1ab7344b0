"""`ascend plan`: parallel layout and per-device memory of a recipe, before anything is downloaded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ascend.cli.common import json_option, print_json, set_option


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        recipe: str = typer.Argument(..., help="Recipe path or built-in name."),
        sets: List[str] = set_option(),
        as_json: bool = json_option("Print the plan (layout, memory per device class, verdict) as JSON."),
        chart: Optional[Path] = typer.Option(None, "--chart", help="Also draw the memory per device as a stacked bar chart: FILE.png (matplotlib) or FILE.svg."),
    ) -> None:
        """Will it fit? Layout per rank, memory per device, KV-cache capacity.

        Exit 3 when the recipe does not fit, with the changes that would make it fit.

        \b
        Examples:
          ascend plan glm5/a3-w8a8
          ascend plan glm5/a3-w8a8 --set serve.max_model_len=131072   # too long: exit 3 + fixes
          ascend plan glm5/a3-w8a8 --set hardware.nodes=2 --set parallel.ep=32 --json
          ascend plan my-recipe.yaml --set convert.precision.default=w8a8
          ascend plan glm5/a3-w8a8 --chart memory.png
        """
        from ascend.plan import plan_recipe, require_fit
        from ascend.recipe import load_recipe

        if chart is not None:
            _check_chart_path(chart)
        plan = plan_recipe(load_recipe(recipe, sets, deploy=False))  # hosts matter to serve, not to a plan
        if chart is not None:
            _write_chart(plan.as_dict(), chart)
        if as_json:
            print_json(plan.as_dict())
        else:
            from rich.console import Console

            from ascend.plan.render import render_plan

            render_plan(plan, Console(width=max(100, Console().width)))
            sys.stdout.flush()
        require_fit(plan)


def _check_chart_path(path: Path) -> None:
    from ascend.errors import RecipeError
    from ascend.paths import writable_file

    if path.suffix.lower() not in (".png", ".svg"):
        raise RecipeError(f"--chart {path}: unknown image type {path.suffix or '(none)'}", fix="name it FILE.png or FILE.svg")
    writable_file(path, "--chart")


def _write_chart(plan: dict, path: Path) -> None:
    from ascend.errors import BackendUnavailable
    from ascend.report.charts import memory_svg, write_memory_png

    if path.suffix.lower() == ".svg":
        from ascend.fileio import write_atomic

        write_atomic(path, '<?xml version="1.0" encoding="utf-8"?>\n' + memory_svg(plan).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1) + "\n")
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BackendUnavailable("--chart FILE.png needs matplotlib", fix="pip install matplotlib, or write FILE.svg") from None
    write_memory_png(plan, path)
