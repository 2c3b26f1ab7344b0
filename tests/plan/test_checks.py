"""check_recipe: model-dependent recipe problems, one line each with the numbers."""

from __future__ import annotations

import pytest

from ascend.plan import check_recipe
from ascend.recipe import builtin_names, load_recipe


def _recipe(name: str, *sets: str):
    return load_recipe(name, list(sets), check=False)


@pytest.mark.parametrize("name", [n for n in builtin_names() if not n.startswith("_")])
def test_builtin_recipes_pass(name):
    assert check_recipe(_recipe(name)) == []


def test_fp8_output_on_a3_is_an_error():
    # ascend-ops.md §3: no FP8 compute on Atlas A2/A3
    problems = check_recipe(_recipe("glm5/a3-w8a8", "convert.precision.default=fp8"))
    assert len(problems) == 1
    assert "convert.precision.default: fp8 output" in problems[0] and "ascend-a3" in problems[0]
    assert "a3-w8a8.yaml" in problems[0] or "--set" in problems[0]  # where it was set


def test_heads_and_experts_divisibility():
    # GLM-4.7: 96 heads, 160 experts; 64 ranks with dp 1 -> TP 64 and EP 64 both fail
    problems = check_recipe(_recipe("glm47/a3-w8a8", "hardware.nodes=4", "parallel.dp=1", "parallel.ep=64"))
    text = "\n".join(problems)
    assert "attention TP = world 64 / dp 1 = 64 does not divide the 96 attention heads" in text
    assert "64 does not divide the 160 routed experts" in text and "use ep in [1, 2, 4, 8, 16, 32]" in text


def test_gqa_kv_heads():
    # TP 12 over 8 KV heads: neither divides the other
    problems = check_recipe(_recipe("glm47/a3-w8a8", "hardware.devices_per_node=12", "parallel.dp=1",
                                    "parallel.ep=4"))
    assert any("8 KV heads" in p for p in problems)


def test_fp8_block_alignment_on_950():
    # checkpoints.md §6.3: GLM-5 kv_b_proj rows at TP 64 give 448 rows = 3.5 blocks
    problems = check_recipe(_recipe(
        "glm5/a3-w8a8", "hardware.chip=ascend-950", "hardware.devices_per_node=8", "hardware.nodes=8",
        "parallel.dp=1", "parallel.ep=64", "convert.precision.default=fp8", "convert.precision.rules=[]"))
    assert len(problems) == 1
    assert "FP8 output breaks 128-block alignment" in problems[0]
    assert "28672 rows gives 448 per rank" in problems[0] and "more)" in problems[0]
    # the same layout in w8a8 is fine
    assert check_recipe(_recipe(
        "glm5/a3-w8a8", "hardware.chip=ascend-950", "hardware.devices_per_node=8", "hardware.nodes=8",
        "parallel.dp=1", "parallel.ep=64", "convert.precision.default=w8a8")) == []


def test_too_many_ranks_per_node():
    problems = check_recipe(_recipe("glm5/a3-w8a8", "hardware.devices_per_node=32", "parallel.ep=32"))
    assert any("32 exceeds the 16 ranks of one ascend-a3 node" in p for p in problems)


def test_unresolvable_model_is_one_problem():
    problems = check_recipe(_recipe("glm5/a3-w8a8", "model.id=ZhipuAI/GLM-5-FB8", "model.path=/nonexistent"))
    assert len(problems) == 1 and "did you mean model.id 'ZhipuAI/GLM-5-FP8'" in problems[0]
