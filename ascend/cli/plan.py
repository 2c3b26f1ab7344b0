"""`ascend plan`: parallel layout and per-device memory of a recipe, before anything is downloaded."""

from __future__ import annotations

import sys
from typing import List

import typer

from ascend.cli.common import json_option, print_json, set_option


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        recipe: str = typer.Argument(..., help="Recipe path or built-in name."),
        sets: List[str] = set_option(),
        as_json: bool = json_option("Print the plan (layout, memory per device class, verdict) as JSON."),
    ) -> None:
        """Will it fit? Layout per rank, memory per device, KV-cache capacity.

        Exit 3 when the recipe does not fit, with the changes that would make it fit.

        \b
        Examples:
          ascend plan glm5/a3-w8a8
          ascend plan glm5/a3-w8a8 --set serve.max_model_len=131072   # too long: exit 3 + fixes
          ascend plan glm5/a3-w8a8 --set hardware.nodes=2 --set parallel.ep=32 --json
          ascend plan my-recipe.yaml --set convert.precision.default=w8a8
        """
        from ascend.plan import plan_recipe, require_fit
        from ascend.recipe import load_recipe

        plan = plan_recipe(load_recipe(recipe, sets, deploy=False))  # hosts matter to serve, not to a plan
        if as_json:
            print_json(plan.as_dict())
        else:
            from rich.console import Console

            from ascend.plan.render import render_plan

            render_plan(plan, Console(width=max(100, Console().width)))
            sys.stdout.flush()
        require_fit(plan)
