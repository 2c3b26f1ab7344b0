"""`ascend recipes`, `ascend show`, `ascend validate`: list, resolve and check recipes."""

from __future__ import annotations

import sys
from typing import List

import typer

from ascend.cli.common import json_option, print_json, set_option
from ascend.errors import RecipeError


def _precision_summary(recipe) -> str:
    precision = recipe.convert.precision
    formats = sorted({rule.format for rule in precision.rules} - {precision.default})
    return precision.default + (f" + {'/'.join(formats)} rules" if formats else "")


def model_checks(recipe) -> list[str]:
    """Model- and chip-dependent rules (heads/experts divisibility, FP8 alignment, chip dtypes)."""
    from ascend.plan import check_recipe

    return check_recipe(recipe)


def register(app: typer.Typer) -> None:
    @app.command("recipes")
    def recipes_cmd(as_json: bool = json_option()) -> None:
        """List built-in recipes (name, model, hardware, precision, engine).

        \b
        Examples:
          ascend recipes
          ascend recipes --json | jq -r '.[].name'
          ascend show glm5/a3-w8a8 > my-glm5.yaml    # start your own from a built-in
        """
        from ascend.recipe import builtin_names, load_recipe

        rows = []
        for name in builtin_names():
            recipe = load_recipe(name, check=False)
            hw = recipe.hardware
            rows.append(
                {
                    "name": name,
                    "model": recipe.model.id or f"{recipe.model.family} ({recipe.model.source})",
                    "hardware": f"{hw.nodes}x {hw.chip} x {hw.devices_per_node}",
                    "precision": _precision_summary(recipe),
                    "engine": recipe.serve.engine,
                    "description": recipe.description,
                }
            )
        if as_json:
            print_json(rows)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Built-in recipes (use the name wherever a recipe path is accepted)")
        for column in ("name", "model", "hardware", "precision", "engine"):
            table.add_column(column)
        for row in rows:
            table.add_row(*(row[c] for c in ("name", "model", "hardware", "precision", "engine")))
        Console(width=max(120, Console().width)).print(table)

    @app.command("show")
    def show_cmd(recipe: str = typer.Argument(..., help="Recipe path or built-in name."), sets: List[str] = set_option()) -> None:
        """Print the fully resolved recipe (bases merged, overrides applied, defaults filled) as YAML.

        \b
        Examples:
          ascend show glm5/a3-w8a8
          ascend show glm5/a3-w8a8 --set serve.port=8000 --set parallel.dp=2
          ascend show tiny/glm5-cpu > my-recipe.yaml
        """
        import yaml

        from ascend.recipe import load_recipe

        resolved = load_recipe(recipe, sets, check=False)
        sys.stdout.write(f"# resolved from {resolved.source_path}\n")
        sys.stdout.write(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))

    @app.command("validate")
    def validate_cmd(
        recipes: List[str] = typer.Argument(..., help="Recipe paths or built-in names."),
        sets: List[str] = set_option(),
    ) -> None:
        """Check recipes without touching weights or NPUs: schema, then cross-field rules.

        Every problem is reported at once, one line each (file:line: key: what — fix). Exit 2 if
        any recipe has a problem. A partial recipe (in a folder named `_...`, used only through
        `base:`) is checked for unknown keys and wrong types, not for completeness.

        \b
        Examples:
          ascend validate glm5/a3-w8a8
          ascend validate recipes/*/*.yaml
          ascend validate my.yaml --set parallel.ep=8
        """
        from pathlib import Path

        from ascend.recipe import check_partial, is_partial, load_recipe

        failed = 0
        for ref in recipes:
            try:
                if Path(ref).is_file() and is_partial(Path(ref)):
                    problems = check_partial(Path(ref))
                    if problems:
                        raise RecipeError(f"{ref}: {len(problems)} problem(s)", problems=problems)
                    typer.echo(f"ok: {ref} (partial recipe for `base:`: keys and types)")
                    continue
                recipe = load_recipe(ref, sets)
                problems = model_checks(recipe)
                if problems:
                    raise RecipeError(f"{ref}: {len(problems)} problem(s)", problems=problems)
            except RecipeError as err:
                failed += 1
                for line in err.lines():
                    print(f"error: {line}", file=sys.stderr)
                continue
            typer.echo(f"ok: {ref} ({recipe.name}: {recipe.layout.world} ranks, attention TP {recipe.layout.attn_tp}, EP {recipe.layout.ep})")
        if failed:
            raise typer.Exit(2)
