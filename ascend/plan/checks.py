"""Model-dependent cross-field checks of a recipe, for ``ascend validate``.

Each problem is one line, prefixed like the recipe loader's own checks (``file:line: key:``),
with the numbers and the fix. Recipe-only rules live in ``ascend.recipe.checks``.
"""

from __future__ import annotations

from typing import Any

from ascend.errors import AscendError, PlanError
from ascend.hardware import chip_profile
from ascend.models import ModelArgs, fp8_alignment_problem, model_args_for_recipe, shard_slice
from ascend.models.precision import COMPUTE_FORMAT
from ascend.models.sharding import divisors
from ascend.plan.memory import weight_templates
from ascend.recipe.settings import Settings

MAX_EXAMPLES = 2


def _where(recipe: Any, key: str) -> str:
    try:
        from ascend.recipe.load import origin

        return f"{origin(recipe, key)}: {key}"
    except Exception:  # a recipe built in code has no origins
        return key


def check_recipe(recipe: Any, args: ModelArgs | None = None) -> list[str]:
    """Every model-dependent problem of ``recipe`` (empty when it is consistent).

    Checks: attention heads (and GQA KV heads) divisible by attention TP; routed experts
    divisible by ep; every other TP split even (dense MLP, shared experts); FP8 output
    block-aligned under its TP split; every output precision computable by the chip; ranks
    per node within the chip's node.
    """
    problems: list[str] = []
    try:
        if args is None:
            args = model_args_for_recipe(recipe.model)
        settings = Settings.from_recipe(recipe)
        chip = chip_profile(settings.chip, ranks_per_node=settings.layout.devices_per_node)
    except AscendError as err:
        return [f"{_where(recipe, 'model')}: {err.line()}"]
    layout = settings.layout
    if layout.problems():
        return problems  # reported by the recipe's own checks; the rest needs a valid shape
    world, tp, moe_tp = layout.world, layout.attn_tp, layout.moe_tp

    if chip.devices_per_node is not None and layout.devices_per_node > chip.devices_per_node:
        problems.append(f"{_where(recipe, 'hardware.devices_per_node')}: {layout.devices_per_node} exceeds the "
                        f"{chip.devices_per_node} ranks of one {chip.name} node — add nodes instead")

    heads = args.num_attention_heads
    good_dp = [world // t for t in divisors(world) if heads % t == 0]
    if heads % tp:
        problems.append(
            f"{_where(recipe, 'parallel.dp')}: attention TP = world {world} / dp {layout.dp} = {tp} does not divide "
            f"the {heads} attention heads — use dp in {sorted(good_dp)}")
    kv = args.num_key_value_heads
    if not args.is_mla and not heads % tp and (kv % tp if tp <= kv else tp % kv):
        problems.append(
            f"{_where(recipe, 'parallel.dp')}: attention TP {tp} and {kv} KV heads: TP must divide the KV heads or be "
            f"a multiple of them — choose dp so that TP is one of "
            f"{sorted(t for t in divisors(world) if heads % t == 0 and (kv % t == 0 if t <= kv else t % kv == 0))}")
    experts = args.n_routed_experts
    if experts and experts % layout.ep:
        problems.append(
            f"{_where(recipe, 'parallel.ep')}: {layout.ep} does not divide the {experts} routed experts — use ep in "
            f"{[d for d in divisors(world) if experts % d == 0]}")

    templates = weight_templates(args, settings)
    if not problems:  # other splits (dense MLP, shared experts) — only once heads/experts are fine
        coords = layout.coords(0)
        seen: set[str] = set()
        for t in templates:
            try:
                shard_slice(t.spec, coords)
            except PlanError as err:
                line = err.line()
                if line not in seen:
                    seen.add(line)
                    problems.append(f"{_where(recipe, 'parallel')}: {line}")

    # FP8 output must split on 128-blocks (checkpoints.md §6.3)
    misaligned = [p for t in templates if t.fmt == "fp8" and (p := fp8_alignment_problem(t.spec, tp, moe_tp))]
    if misaligned:
        more = f" (and {len(misaligned) - MAX_EXAMPLES} more)" if len(misaligned) > MAX_EXAMPLES else ""
        problems.append(
            f"{_where(recipe, 'convert.precision')}: FP8 output breaks 128-block alignment: "
            + "; ".join(misaligned[:MAX_EXAMPLES]) + more
            + " — choose a smaller TP (larger dp / ep), or a bf16/w8a8 rule for these tensors")

    # output precision the chip cannot compute in
    used: dict[str, str] = {}
    for t in templates:
        used.setdefault(COMPUTE_FORMAT.get(t.fmt, t.fmt), t.spec.name)
    for fmt, example in sorted(used.items()):
        if not chip.supports(fmt):
            key = "convert.precision.default" if fmt == settings.precision.default else "convert.precision.rules"
            hint = {"fp8": "ascend-ops.md §3: FP8 needs Ascend 950; A2/A3 compute bf16 or int8 — use bf16 or w8a8"}
            problems.append(
                f"{_where(recipe, key)}: {fmt} output (e.g. {example}) cannot run on {chip.name} — "
                + hint.get(fmt, f"use one of {sorted(chip.formats)}"))
    return problems
