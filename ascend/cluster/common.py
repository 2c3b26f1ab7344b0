"""What every scheduler's job file shares: the recipe it carries and the per-node launcher command."""

from __future__ import annotations

import shlex

import yaml

from ascend.recipe.schema import Recipe

RECIPE_ENV = "ASCEND_RECIPE_YAML"  # the resolved recipe, carried in the job's environment
HOSTS_ENV = "ASCEND_HOSTS"  # the allocation's node addresses as a YAML list, node 0 first


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe with every base and --set applied, as YAML: the job does not depend on the
    submitter's files or command line (relative paths stay relative to the job's directory)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def with_absolute_paths(recipe: Recipe) -> Recipe:
    """The recipe with model.path and convert.output absolute (a pod's working directory is not ours)."""
    from pathlib import Path

    model = recipe.model.model_copy(update={"path": str(Path(recipe.model.path).expanduser().absolute())})
    convert = recipe.convert.model_copy(update={"output": str(Path(recipe.convert.output).expanduser().absolute())})
    return recipe.model_copy(update={"model": model, "convert": convert})


def calibrates(recipe: Recipe) -> bool:
    """Whether the recipe's conversion writes static W8A8 linears: then one calibration job
    (`ascend convert --calibrate-only`) runs before the parts, which all use its result."""
    from ascend.models.catalog import model_args_for_recipe
    from ascend.models.precision import W8A8_STATIC, written_specs
    from ascend.models.tensors import tensor_specs

    a = model_args_for_recipe(recipe.model)
    specs = tensor_specs(a, mtp=recipe.convert.mtp != "drop")
    return any(fmt == W8A8_STATIC for _, fmt in written_specs(a, recipe.precision, specs))


def heredoc(text: str, tag: str) -> str:
    """A quoted here-document body (no expansion); refuses text that would end it early."""
    if any(line == tag for line in text.splitlines()):
        raise ValueError(f"text contains the here-document tag {tag}")
    return f"<<'{tag}'\n{text.rstrip(chr(10))}\n{tag}"


def export_recipe(recipe: Recipe) -> list[str]:
    """Shell lines that put the resolved recipe into the job's environment."""
    return [f'{RECIPE_ENV}="$(cat {heredoc(recipe_yaml(recipe), "ASCEND_RECIPE")}', ')"', f"export {RECIPE_ENV}"]


def node_launcher(node: str, *, device_ips_from: str | None = None) -> str:
    """Bash that regenerates node ``node``'s launch script (`ascend serve --emit script`) for the
    hosts in $ASCEND_HOSTS and executes it: the same script `ascend serve --dry-run` prints.

    ``node`` is a shell word (e.g. ``"$SLURM_NODEID"``). The script's trap stops the node's ranks
    on SIGTERM, which is how schedulers stop a task.
    """
    extra = f" --device-ips-from {shlex.quote(device_ips_from)}" if device_ips_from else ""
    return (
        'set -euo pipefail; work="$(mktemp -d)"; '
        f'printf "%s\\n" "${RECIPE_ENV}" > "$work/recipe.yaml"; '
        f'"${{ASCEND_CLI:-ascend}}" serve "$work/recipe.yaml" --node {node} --set "hardware.hosts=${HOSTS_ENV}"'
        f'{extra} --emit script > "$work/node.sh"; '
        'exec bash "$work/node.sh"'
    )
